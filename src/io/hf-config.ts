import { join } from "node:path";
import { FormatError } from "./errors.ts";
import { readJsonFile } from "./files.ts";

export type RopeScaling =
  | { type: "none" }
  | { type: "linear"; factor: number }
  | { type: "dynamic"; factor: number }
  | {
      type: "yarn";
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast: number;
      betaSlow: number;
      /** Resolved the way transformers does when the config leaves it out (from factor, mscale, mscale_all_dim). */
      attentionFactor: number;
      /** Whether the correction range is rounded to whole dimensions (transformers default true). */
      truncate: boolean;
    }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export const LLAMA_FAMILY_MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
export type LlamaFamilyModelType = (typeof LLAMA_FAMILY_MODEL_TYPES)[number];

export interface LlamaFamilyConfig {
  family: "llama";
  modelType: LlamaFamilyModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  /**
   * Split in two because Qwen2 has bias on q/k/v but not on o_proj, while Llama's
   * attention_bias puts a bias on all four projections and Mistral has none.
   */
  attentionBias: { qkv: boolean; output: boolean };
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** Informational: training and inference here use full causal attention. */
  slidingWindow?: number;
  hiddenAct: "silu";
  bosTokenId?: number;
  /** Several for models like Llama 3 that stop on any of a few tokens. */
  eosTokenIds: number[];
  /** transformers gives this embedding row padding_idx semantics: it receives no gradient. */
  padTokenId?: number;
}

export interface Gpt2Config {
  family: "gpt2";
  modelType: "gpt2";
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  layerNormEps: number;
  /** Recorded as written (gelu_new, gelu_pytorch_tanh, gelu, relu, ...); the model layer decides what it supports. */
  activation: string;
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  reorderAndUpcastAttn: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
}

export type BertProblemType = "regression" | "single_label_classification" | "multi_label_classification";

export interface BertConfig {
  family: "bert";
  modelType: "bert";
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenAct: string;
  numLabels: number;
  /** Index i holds the name of label i (LABEL_i when the config has no id2label). */
  labelNames: string[];
  problemType?: BertProblemType;
  /** Already falls back to hidden_dropout_prob when classifier_dropout is null, as transformers does. */
  classifierDropout: number;
  architectures: string[];
  positionEmbeddingType: "absolute";
  /** transformers gives this embedding row padding_idx semantics: it receives no gradient. */
  padTokenId?: number;
}

export type ModelConfig = LlamaFamilyConfig | Gpt2Config | BertConfig;

export const SUPPORTED_MODEL_TYPES = [...LLAMA_FAMILY_MODEL_TYPES, "gpt2", "bert"] as const;

const CONFIG_FILE = "config.json";

export function loadConfig(dir: string): ModelConfig {
  const file = join(dir, CONFIG_FILE);
  const json = readJsonFile(file);
  return parseConfig(json, file);
}

/** `file` only names the source in error messages. */
export function parseConfig(json: unknown, file: string): ModelConfig {
  const fields = FieldReader.root(json, file);
  const modelType = fields.requiredString("model_type");
  if ((LLAMA_FAMILY_MODEL_TYPES as readonly string[]).includes(modelType)) {
    return parseLlamaFamily(fields, modelType as LlamaFamilyModelType);
  }
  if (modelType === "gpt2") return parseGpt2(fields);
  if (modelType === "bert") return parseBert(fields);
  throw fields.error("model_type", `unsupported model type "${modelType}"; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`);
}

// Defaults below are those of the transformers 5 config classes, so that a sparse config.json
// means the same thing here as it does in Python.
const MAX_POSITION_EMBEDDINGS_DEFAULT: Record<LlamaFamilyModelType, number> = {
  llama: 2048,
  mistral: 131072,
  qwen2: 32768,
};
const ROPE_THETA_DEFAULT = 10000;
const SLIDING_WINDOW_DEFAULT = 4096;

function parseLlamaFamily(fields: FieldReader, modelType: LlamaFamilyModelType): LlamaFamilyConfig {
  const hiddenSize = fields.requiredInt("hidden_size");
  const numHeads = fields.requiredInt("num_attention_heads");
  const numKvHeads = fields.optionalInt("num_key_value_heads") ?? numHeads;
  const headDim = fields.optionalInt("head_dim") ?? headDimFromHidden(fields, hiddenSize, numHeads, "num_attention_heads");
  if (numHeads % numKvHeads !== 0) {
    throw fields.error("num_key_value_heads", `num_attention_heads (${numHeads}) is not divisible by num_key_value_heads (${numKvHeads})`);
  }
  const hiddenAct = fields.optionalString("hidden_act") ?? "silu";
  if (hiddenAct !== "silu") {
    throw fields.error("hidden_act", `"${hiddenAct}" is not supported for ${modelType}; only "silu" is`);
  }
  const maxPositionEmbeddings = fields.optionalInt("max_position_embeddings") ?? MAX_POSITION_EMBEDDINGS_DEFAULT[modelType];
  const { ropeTheta, ropeScaling } = parseRope(fields, maxPositionEmbeddings);

  // Only LlamaAttention/LlamaMLP read attention_bias and mlp_bias; Qwen2 and Mistral hard-code theirs.
  const llamaAttentionBias = modelType === "llama" && (fields.optionalBoolean("attention_bias") ?? false);
  const attentionBias =
    modelType === "qwen2" ? { qkv: true, output: false } : { qkv: llamaAttentionBias, output: llamaAttentionBias };
  const mlpBias = modelType === "llama" && (fields.optionalBoolean("mlp_bias") ?? false);

  return {
    family: "llama",
    modelType,
    vocabSize: fields.requiredInt("vocab_size"),
    hiddenSize,
    intermediateSize: fields.requiredInt("intermediate_size"),
    numLayers: fields.requiredInt("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: fields.optionalPositiveNumber("rms_norm_eps") ?? 1e-6,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    attentionBias,
    mlpBias,
    tieWordEmbeddings: fields.optionalBoolean("tie_word_embeddings") ?? false,
    slidingWindow: parseSlidingWindow(fields, modelType),
    hiddenAct,
    bosTokenId: fields.optionalTokenId("bos_token_id"),
    eosTokenIds: fields.tokenIds("eos_token_id"),
    padTokenId: fields.optionalTokenId("pad_token_id"),
  };
}

function parseSlidingWindow(fields: FieldReader, modelType: LlamaFamilyModelType): number | undefined {
  switch (modelType) {
    case "llama":
      return undefined;
    case "mistral":
      return fields.has("sliding_window") ? fields.optionalInt("sliding_window") : SLIDING_WINDOW_DEFAULT;
    case "qwen2":
      // Qwen2 configs carry a sliding_window value even when use_sliding_window turns it off.
      if (!(fields.optionalBoolean("use_sliding_window") ?? false)) return undefined;
      return fields.has("sliding_window") ? fields.optionalInt("sliding_window") : SLIDING_WINDOW_DEFAULT;
  }
}

/**
 * transformers 5 writes `rope_parameters: {rope_type, rope_theta, ...}`; older configs write a
 * top-level `rope_theta` plus `rope_scaling: {type | rope_type, factor, ...}` (or null). Both are
 * read into one shape, with the new block winning where both are present.
 */
function parseRope(fields: FieldReader, maxPositionEmbeddings: number): { ropeTheta: number; ropeScaling: RopeScaling } {
  const params = fields.optionalObject("rope_parameters") ?? fields.optionalObject("rope_scaling");
  const ropeTheta =
    params?.optionalPositiveNumber("rope_theta") ?? fields.optionalPositiveNumber("rope_theta") ?? ROPE_THETA_DEFAULT;
  if (params === undefined) return { ropeTheta, ropeScaling: { type: "none" } };

  const ropeTypeKey = params.has("rope_type") ? "rope_type" : "type";
  const ropeType = params.optionalString(ropeTypeKey) ?? "default";
  // Some configs keep the pretraining length at the top level rather than in the rope block.
  const originalMaxPositionEmbeddings = () =>
    params.optionalInt("original_max_position_embeddings") ??
    fields.optionalInt("original_max_position_embeddings") ??
    maxPositionEmbeddings;

  switch (ropeType) {
    case "default":
      return { ropeTheta, ropeScaling: { type: "none" } };
    case "linear":
    case "dynamic":
      return { ropeTheta, ropeScaling: { type: ropeType, factor: params.requiredPositiveNumber("factor") } };
    case "yarn": {
      const original = originalMaxPositionEmbeddings();
      // transformers derives a missing factor from how far max_position_embeddings extends the original length.
      const factor = params.optionalPositiveNumber("factor") ?? maxPositionEmbeddings / original;
      return {
        ropeTheta,
        ropeScaling: {
          type: "yarn",
          factor,
          originalMaxPositionEmbeddings: original,
          // transformers uses `or`, so an explicit 0 also means the default.
          betaFast: params.optionalNumber("beta_fast") || 32,
          betaSlow: params.optionalNumber("beta_slow") || 1,
          attentionFactor: params.optionalPositiveNumber("attention_factor") ?? yarnAttentionFactor(params, factor),
          truncate: params.optionalBoolean("truncate") ?? true,
        },
      };
    }
    case "llama3":
      return {
        ropeTheta,
        ropeScaling: {
          type: "llama3",
          factor: params.requiredPositiveNumber("factor"),
          lowFreqFactor: params.requiredPositiveNumber("low_freq_factor"),
          highFreqFactor: params.requiredPositiveNumber("high_freq_factor"),
          originalMaxPositionEmbeddings: originalMaxPositionEmbeddings(),
        },
      };
    default:
      throw params.error(ropeTypeKey, `unsupported RoPE type "${ropeType}"; supported: default, linear, dynamic, yarn, llama3`);
  }
}

/** YaRN's attention temperature, computed as transformers' `_compute_yarn_parameters` does. */
function yarnAttentionFactor(params: FieldReader, factor: number): number {
  const mscaleOf = (scale: number, mscale: number) => (scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1);
  const mscale = params.optionalNumber("mscale");
  const mscaleAllDim = params.optionalNumber("mscale_all_dim");
  if (mscale && mscaleAllDim) return mscaleOf(factor, mscale) / mscaleOf(factor, mscaleAllDim);
  return mscaleOf(factor, 1);
}

function parseGpt2(fields: FieldReader): Gpt2Config {
  const hiddenSize = fields.requiredInt("n_embd");
  const numHeads = fields.requiredInt("n_head");
  headDimFromHidden(fields, hiddenSize, numHeads, "n_head");
  return {
    family: "gpt2",
    modelType: "gpt2",
    vocabSize: fields.requiredInt("vocab_size"),
    hiddenSize,
    numLayers: fields.requiredInt("n_layer"),
    numHeads,
    intermediateSize: fields.optionalInt("n_inner") ?? 4 * hiddenSize,
    maxPositions: fields.requiredInt("n_positions"),
    layerNormEps: fields.optionalPositiveNumber("layer_norm_epsilon") ?? 1e-5,
    activation: fields.optionalString("activation_function") ?? "gelu_new",
    scaleAttnWeights: fields.optionalBoolean("scale_attn_weights") ?? true,
    scaleAttnByInverseLayerIdx: fields.optionalBoolean("scale_attn_by_inverse_layer_idx") ?? false,
    reorderAndUpcastAttn: fields.optionalBoolean("reorder_and_upcast_attn") ?? false,
    tieWordEmbeddings: fields.optionalBoolean("tie_word_embeddings") ?? true,
    bosTokenId: fields.optionalTokenId("bos_token_id"),
    eosTokenIds: fields.tokenIds("eos_token_id"),
  };
}

const BERT_PROBLEM_TYPES: readonly BertProblemType[] = ["regression", "single_label_classification", "multi_label_classification"];

function parseBert(fields: FieldReader): BertConfig {
  const hiddenSize = fields.requiredInt("hidden_size");
  const numHeads = fields.requiredInt("num_attention_heads");
  headDimFromHidden(fields, hiddenSize, numHeads, "num_attention_heads");

  const positionEmbeddingType = fields.optionalString("position_embedding_type") ?? "absolute";
  if (positionEmbeddingType !== "absolute") {
    throw fields.error("position_embedding_type", `"${positionEmbeddingType}" is not supported; only "absolute" is`);
  }
  const problemType = fields.optionalString("problem_type");
  if (problemType !== undefined && !(BERT_PROBLEM_TYPES as readonly string[]).includes(problemType)) {
    throw fields.error("problem_type", `unknown problem type "${problemType}"; expected one of ${BERT_PROBLEM_TYPES.join(", ")}`);
  }
  const labelNames = parseLabelNames(fields);
  const hiddenDropoutProb = fields.optionalNumber("hidden_dropout_prob") ?? 0.1;

  return {
    family: "bert",
    modelType: "bert",
    vocabSize: fields.requiredInt("vocab_size"),
    hiddenSize,
    numLayers: fields.requiredInt("num_hidden_layers"),
    numHeads,
    intermediateSize: fields.requiredInt("intermediate_size"),
    maxPositions: fields.requiredInt("max_position_embeddings"),
    typeVocabSize: fields.optionalInt("type_vocab_size") ?? 2,
    layerNormEps: fields.optionalPositiveNumber("layer_norm_eps") ?? 1e-12,
    hiddenAct: fields.optionalString("hidden_act") ?? "gelu",
    numLabels: labelNames.length,
    labelNames,
    problemType: problemType as BertProblemType | undefined,
    classifierDropout: fields.optionalNumber("classifier_dropout") ?? hiddenDropoutProb,
    architectures: fields.optionalStringArray("architectures") ?? [],
    positionEmbeddingType,
    // BertConfig defaults pad_token_id to 0; an explicit null means no padding row.
    padTokenId: fields.has("pad_token_id") ? fields.optionalTokenId("pad_token_id") : 0,
  };
}

/** id2label wins over num_labels, as in transformers, where num_labels is derived from it. */
function parseLabelNames(fields: FieldReader): string[] {
  const id2label = fields.optionalObject("id2label");
  if (id2label === undefined) {
    const numLabels = fields.optionalInt("num_labels") ?? 2;
    return Array.from({ length: numLabels }, (_, i) => `LABEL_${i}`);
  }
  const ids = id2label.keys();
  const labelNames: string[] = [];
  for (const key of ids) {
    const id = Number(key);
    if (String(id) !== key || !Number.isInteger(id) || id < 0 || id >= ids.length) {
      throw id2label.error(key, `label ids must be 0..${ids.length - 1}`);
    }
    labelNames[id] = id2label.requiredString(key);
  }
  if (labelNames.length === 0) throw fields.error("id2label", "has no labels");
  return labelNames;
}

function headDimFromHidden(fields: FieldReader, hiddenSize: number, numHeads: number, headsKey: string): number {
  if (hiddenSize % numHeads !== 0) {
    throw fields.error(headsKey, `hidden size (${hiddenSize}) is not divisible by ${headsKey} (${numHeads})`);
  }
  return hiddenSize / numHeads;
}

/**
 * Typed access to one JSON object of the config, so every error names the file and the dotted
 * path of the offending field. JSON null counts as absent, as None does in transformers.
 */
class FieldReader {
  private constructor(
    private readonly object: Record<string, unknown>,
    private readonly file: string,
    private readonly path: string,
  ) {}

  static root(json: unknown, file: string): FieldReader {
    if (!isPlainObject(json)) throw new FormatError(file, `expected a JSON object, got ${describe(json)}`);
    return new FieldReader(json, file, "");
  }

  error(key: string, message: string): FormatError {
    return new FormatError(this.file, `field "${this.path}${key}": ${message}`);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.object, key);
  }

  keys(): string[] {
    return Object.keys(this.object);
  }

  private value(key: string): unknown {
    return this.has(key) ? this.object[key] : undefined;
  }

  private required<T>(key: string, read: (key: string) => T | undefined): T {
    const value = read.call(this, key);
    if (value === undefined) throw this.error(key, "required field is missing");
    return value;
  }

  /** Every numeric reader goes through here so a wrong type is reported with what was expected. */
  private number(key: string, expected: string, accept: (value: number) => boolean): number | undefined {
    const value = this.value(key);
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "number" || !Number.isFinite(value) || !accept(value)) {
      throw this.error(key, `expected ${expected}, got ${describe(value)}`);
    }
    return value;
  }

  optionalNumber(key: string): number | undefined {
    return this.number(key, "a number", () => true);
  }

  optionalPositiveNumber(key: string): number | undefined {
    return this.number(key, "a positive number", (value) => value > 0);
  }

  requiredPositiveNumber(key: string): number {
    return this.required(key, this.optionalPositiveNumber);
  }

  /** Sizes and counts. */
  optionalInt(key: string): number | undefined {
    return this.number(key, "a positive integer", (value) => Number.isInteger(value) && value > 0);
  }

  requiredInt(key: string): number {
    return this.required(key, this.optionalInt);
  }

  optionalTokenId(key: string): number | undefined {
    return this.number(key, "a token id (integer >= 0)", isTokenId);
  }

  /** A single id or a list of ids; absent or null gives []. */
  tokenIds(key: string): number[] {
    const value = this.value(key);
    if (!Array.isArray(value)) {
      const id = this.optionalTokenId(key);
      return id === undefined ? [] : [id];
    }
    if (!value.every(isTokenId)) {
      throw this.error(key, `expected token ids (integers >= 0), got ${JSON.stringify(value)}`);
    }
    return value;
  }

  optionalBoolean(key: string): boolean | undefined {
    const value = this.value(key);
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "boolean") throw this.error(key, `expected true or false, got ${describe(value)}`);
    return value;
  }

  optionalString(key: string): string | undefined {
    const value = this.value(key);
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "string") throw this.error(key, `expected a string, got ${describe(value)}`);
    return value;
  }

  requiredString(key: string): string {
    return this.required(key, this.optionalString);
  }

  optionalStringArray(key: string): string[] | undefined {
    const value = this.value(key);
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
      throw this.error(key, `expected a list of strings, got ${describe(value)}`);
    }
    return value;
  }

  optionalObject(key: string): FieldReader | undefined {
    const value = this.value(key);
    if (value === undefined || value === null) return undefined;
    if (!isPlainObject(value)) throw this.error(key, `expected an object, got ${describe(value)}`);
    return new FieldReader(value, this.file, `${this.path}${key}.`);
  }
}

function isTokenId(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return `string ${JSON.stringify(value)}`;
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** Per-frequency divisors equivalent to transformers' _compute_llama3_parameters. */
export function llama3FreqFactors(dim: number, theta: number, s: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }): Float32Array {
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return Float32Array.from({ length: dim / 2 }, (_, i) => {
    const invFreq = 1 / theta ** ((2 * i) / dim);
    const wavelen = (2 * Math.PI) / invFreq;
    if (wavelen < highWavelen) return 1;
    if (wavelen > lowWavelen) return s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    const scaled = (1 - smooth) * (invFreq / s.factor) + smooth * invFreq;
    return invFreq / scaled;
  });
}
