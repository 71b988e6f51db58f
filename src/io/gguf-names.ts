// How Hugging Face checkpoints and llama.cpp GGUF files name the same things, in both directions:
// tensor names and the layout changes between them (llama.cpp's Q/K row permutation for its
// interleaved RoPE, GPT-2's Conv1D transpose), config.json fields and GGUF metadata keys, and a
// tokenizer.json's byte-level BPE and the tokenizer.ggml.* keys. Everything here follows
// llama.cpp's convert_hf_to_gguf.py and src/llama-vocab.cpp of the pinned release (v0.4.0), so
// that export (src/export) and import (src/models/gguf-loader.ts) stay each other's inverse.
import type { GgufValue } from "./gguf.ts";
import { FormatError } from "./errors.ts";
import { llama3FreqFactors, type Gpt2Config, type LlamaFamilyConfig, type ModelConfig, type RopeScaling } from "./hf-config.ts";

// ---------------------------------------------------------------------------------------------
// Tensor names

/** How a tensor's values change between the two files (applied to HF values on export). */
export type TensorLayout =
  | { kind: "same" }
  /** llama.cpp rotates adjacent pairs (GGML_ROPE_TYPE_NORM); HF rotates halves: rows are reordered per head. */
  | { kind: "rope-permute"; heads: number }
  /** GPT-2's Conv1D stores [in, out]; GGUF stores nn.Linear's [out, in]. */
  | { kind: "transpose" };

export interface TensorMapping {
  hf: string;
  gguf: string;
  /** The HF (PyTorch-order) shape the config implies. */
  shape: number[];
  layout: TensorLayout;
}

/** The llama.cpp architecture a model family is written as. */
export type GgufArch = "llama" | "qwen2" | "gpt2";

export function ggufArchFor(config: ModelConfig): GgufArch {
  switch (config.family) {
    case "llama":
      // convert_hf_to_gguf.py writes Mistral as "llama"; Qwen2 has an architecture of its own (NEOX RoPE, no permutation).
      return config.modelType === "qwen2" ? "qwen2" : "llama";
    case "gpt2":
      return "gpt2";
    case "bert":
      throw new Error("BERT sequence classifiers cannot be exported to GGUF: llama.cpp has no classification head for them");
  }
}

/** Every tensor of the config's HF state dict with its GGUF name, shape and layout, in HF order. */
export function tensorMappings(config: ModelConfig): TensorMapping[] {
  const arch = ggufArchFor(config);
  const out: TensorMapping[] = [];
  const same: TensorLayout = { kind: "same" };
  const add = (hf: string, gguf: string, shape: number[], layout: TensorLayout = same) => out.push({ hf, gguf, shape, layout });
  if (config.family === "llama") {
    const c = config;
    const h = c.hiddenSize;
    const permute = arch === "llama";
    const q: TensorLayout = permute ? { kind: "rope-permute", heads: c.numHeads } : same;
    const k: TensorLayout = permute ? { kind: "rope-permute", heads: c.numKvHeads } : same;
    add("model.embed_tokens.weight", "token_embd.weight", [c.vocabSize, h]);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      const b = `blk.${i}`;
      add(`${p}.input_layernorm.weight`, `${b}.attn_norm.weight`, [h]);
      const linear = (hf: string, gguf: string, outF: number, inF: number, bias: boolean, layout: TensorLayout = same) => {
        add(`${p}.${hf}.weight`, `${b}.${gguf}.weight`, [outF, inF], layout);
        if (bias) add(`${p}.${hf}.bias`, `${b}.${gguf}.bias`, [outF], layout);
      };
      const qDim = c.numHeads * c.headDim;
      const kvDim = c.numKvHeads * c.headDim;
      linear("self_attn.q_proj", "attn_q", qDim, h, c.attentionBias.qkv, q);
      linear("self_attn.k_proj", "attn_k", kvDim, h, c.attentionBias.qkv, k);
      linear("self_attn.v_proj", "attn_v", kvDim, h, c.attentionBias.qkv);
      linear("self_attn.o_proj", "attn_output", h, qDim, c.attentionBias.output);
      add(`${p}.post_attention_layernorm.weight`, `${b}.ffn_norm.weight`, [h]);
      linear("mlp.gate_proj", "ffn_gate", c.intermediateSize, h, c.mlpBias);
      linear("mlp.up_proj", "ffn_up", c.intermediateSize, h, c.mlpBias);
      linear("mlp.down_proj", "ffn_down", h, c.intermediateSize, c.mlpBias);
    }
    add("model.norm.weight", "output_norm.weight", [h]);
    if (!c.tieWordEmbeddings) add("lm_head.weight", "output.weight", [c.vocabSize, h]);
    return out;
  }
  if (config.family === "gpt2") {
    const c = config;
    const h = c.hiddenSize;
    const t: TensorLayout = { kind: "transpose" };
    add("transformer.wte.weight", "token_embd.weight", [c.vocabSize, h]);
    add("transformer.wpe.weight", "position_embd.weight", [c.maxPositions, h]);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `transformer.h.${i}`;
      const b = `blk.${i}`;
      const norm = (hf: string, gguf: string) => {
        add(`${p}.${hf}.weight`, `${b}.${gguf}.weight`, [h]);
        add(`${p}.${hf}.bias`, `${b}.${gguf}.bias`, [h]);
      };
      // Conv1D: HF [in, out]
      const conv = (hf: string, gguf: string, inF: number, outF: number) => {
        add(`${p}.${hf}.weight`, `${b}.${gguf}.weight`, [inF, outF], t);
        add(`${p}.${hf}.bias`, `${b}.${gguf}.bias`, [outF]);
      };
      norm("ln_1", "attn_norm");
      conv("attn.c_attn", "attn_qkv", h, 3 * h);
      conv("attn.c_proj", "attn_output", h, h);
      norm("ln_2", "ffn_norm");
      conv("mlp.c_fc", "ffn_up", h, c.intermediateSize);
      conv("mlp.c_proj", "ffn_down", c.intermediateSize, h);
    }
    add("transformer.ln_f.weight", "output_norm.weight", [h]);
    add("transformer.ln_f.bias", "output_norm.bias", [h]);
    if (!c.tieWordEmbeddings) add("lm_head.weight", "output.weight", [c.vocabSize, h]);
    return out;
  }
  throw new Error(`${config.modelType} has no GGUF tensor names`);
}

/** The GGUF (torch-order) shape of a tensor whose HF shape is `shape`. */
export function ggufShape(shape: readonly number[], layout: TensorLayout): number[] {
  return layout.kind === "transpose" ? [shape[1]!, shape[0]!] : [...shape];
}

/** HF values (row-major, HF shape) to GGUF values (row-major, GGUF torch-order shape). */
export function toGgufLayout(values: Float32Array, shape: readonly number[], layout: TensorLayout): Float32Array {
  switch (layout.kind) {
    case "same":
      return values;
    case "rope-permute":
      return permuteRows(values, shape, layout.heads, false);
    case "transpose":
      return transpose(values, shape[0]!, shape[1]!);
  }
}

/** GGUF values to HF values: the inverse of toGgufLayout; `shape` is the HF shape. */
export function fromGgufLayout(values: Float32Array, shape: readonly number[], layout: TensorLayout): Float32Array {
  switch (layout.kind) {
    case "same":
      return values;
    case "rope-permute":
      return permuteRows(values, shape, layout.heads, true);
    case "transpose":
      return transpose(values, shape[1]!, shape[0]!);
  }
}

/**
 * convert_hf_to_gguf.py's LlamaModel.permute: within each head of headDim rows, HF row
 * j * headDim/2 + i (first or second half) goes to GGUF row 2i + j (interleaved pairs). Works on
 * weights [rows, cols] and biases [rows] alike; `inverse` undoes it.
 */
export function permuteRows(values: Float32Array, shape: readonly number[], heads: number, inverse = false): Float32Array {
  const rows = shape[0]!;
  const cols = shape.length > 1 ? values.length / rows : 1;
  const headDim = rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0 || values.length !== rows * cols) {
    throw new Error(`cannot permute ${rows} rows for RoPE over ${heads} heads`);
  }
  const half = headDim / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const hfRow = h * headDim + j * half + i;
        const ggufRow = h * headDim + 2 * i + j;
        const [from, to] = inverse ? [ggufRow, hfRow] : [hfRow, ggufRow];
        out.set(values.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Model metadata

export type GgufMetadata = Map<string, GgufValue>;

const u32 = (value: number): GgufValue => ({ type: "u32", value });
const f32 = (value: number): GgufValue => ({ type: "f32", value });
const str = (value: string): GgufValue => ({ type: "string", value });

/** general.file_type values (llama_ftype) for what tasktune writes. */
export const GGUF_FILE_TYPE: Record<string, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k: 14, bf16: 32 };

/**
 * The architecture keys convert_hf_to_gguf.py writes for this config, plus a rope_freqs tensor
 * for Llama 3 RoPE scaling (returned separately, as llama.cpp reads it as a tensor).
 */
export function modelMetadata(config: ModelConfig, name: string): { metadata: GgufMetadata; extraTensors: { name: string; values: Float32Array }[] } {
  const arch = ggufArchFor(config);
  const m: GgufMetadata = new Map();
  const key = (k: string, v: GgufValue) => m.set(`${arch}.${k}`, v);
  m.set("general.architecture", str(arch));
  m.set("general.type", str("model"));
  m.set("general.name", str(name));
  const extraTensors: { name: string; values: Float32Array }[] = [];
  if (config.family === "llama") {
    const c = config;
    key("block_count", u32(c.numLayers));
    key("context_length", u32(c.maxPositionEmbeddings));
    key("embedding_length", u32(c.hiddenSize));
    key("feed_forward_length", u32(c.intermediateSize));
    key("attention.head_count", u32(c.numHeads));
    key("attention.head_count_kv", u32(c.numKvHeads));
    key("rope.freq_base", f32(c.ropeTheta));
    key("attention.layer_norm_rms_epsilon", f32(c.rmsNormEps));
    key("attention.key_length", u32(c.headDim));
    key("attention.value_length", u32(c.headDim));
    key("vocab_size", u32(c.vocabSize));
    key("rope.dimension_count", u32(c.headDim));
    const s = c.ropeScaling;
    switch (s.type) {
      case "none":
        break;
      case "linear":
        key("rope.scaling.type", str("linear"));
        key("rope.scaling.factor", f32(s.factor));
        break;
      case "yarn":
        key("rope.scaling.type", str("yarn"));
        key("rope.scaling.factor", f32(s.factor));
        key("rope.scaling.original_context_length", u32(s.originalMaxPositionEmbeddings));
        // llama.cpp's llama and qwen2 architectures do not read yarn_beta_fast/slow: they always use 32 and 1.
        if (s.betaFast !== 32 || s.betaSlow !== 1) {
          throw new Error(`YaRN with beta_fast ${s.betaFast} and beta_slow ${s.betaSlow} cannot be exported: llama.cpp's ${arch} architecture always uses 32 and 1`);
        }
        // llama.cpp ends up with rope.scaling.attn_factor times ggml's own 1 + 0.1 ln(factor);
        // transformers applies attention_factor alone, so store their ratio (1 for the default).
        key("rope.scaling.attn_factor", f32(s.attentionFactor / (1 + 0.1 * Math.log(s.factor))));
        if (!s.truncate) throw new Error("YaRN with truncate: false cannot be expressed in GGUF (llama.cpp always truncates)");
        break;
      case "llama3":
        extraTensors.push({ name: "rope_freqs.weight", values: llama3FreqFactors(c.headDim, c.ropeTheta, s) });
        break;
      case "dynamic":
        throw new Error("dynamic NTK RoPE scaling has no llama.cpp equivalent for this architecture; it cannot be exported to GGUF");
    }
    return { metadata: m, extraTensors };
  }
  if (config.family === "gpt2") {
    const c = config;
    if (c.activation !== "gelu_new" && c.activation !== "gelu_pytorch_tanh") {
      throw new Error(`GPT-2 activation_function "${c.activation}" cannot be exported: llama.cpp's gpt2 uses tanh GELU`);
    }
    if (!c.scaleAttnWeights || c.scaleAttnByInverseLayerIdx) {
      throw new Error("GPT-2 with scale_attn_weights false or scale_attn_by_inverse_layer_idx cannot be exported: llama.cpp scales by 1/sqrt(head_dim)");
    }
    key("block_count", u32(c.numLayers));
    key("context_length", u32(c.maxPositions));
    key("embedding_length", u32(c.hiddenSize));
    key("feed_forward_length", u32(c.intermediateSize));
    key("attention.head_count", u32(c.numHeads));
    key("attention.layer_norm_epsilon", f32(c.layerNormEps));
    return { metadata: m, extraTensors };
  }
  throw new Error(`cannot export ${config.modelType}`);
}

/** Numbers of any GGUF integer or float type (other writers pick other widths). */
function numberValue(meta: ReadonlyMap<string, GgufValue>, key: string, file: string): number | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (v.type === "array") {
    // Per-layer arrays (head_count_kv of some models): fine when every layer agrees.
    const values = (v.value as (number | bigint | boolean | string)[]).map(Number);
    if (values.length === 0 || values.some((x) => x !== values[0] || Number.isNaN(x))) {
      throw new FormatError(file, `metadata "${key}" differs between layers (${values.join(", ")}); tasktune needs one value`);
    }
    return values[0];
  }
  if (v.type === "string" || v.type === "bool") throw new FormatError(file, `metadata "${key}" is a ${v.type}, expected a number`);
  return v.type === "f32" ? shortestF32(v.value) : Number(v.value);
}

/** The shortest decimal that is the same float32 (1e-6 rather than 9.999999974752427e-7), as config.json would write it. */
function shortestF32(x: number): number {
  for (let digits = 1; digits < 9; digits++) {
    const candidate = Number(x.toPrecision(digits));
    if (Math.fround(candidate) === x) return candidate;
  }
  return x;
}

function stringValue(meta: ReadonlyMap<string, GgufValue>, key: string, file: string): string | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (v.type !== "string") throw new FormatError(file, `metadata "${key}" is a ${v.type}, expected a string`);
  return v.value;
}

function boolValue(meta: ReadonlyMap<string, GgufValue>, key: string, file: string): boolean | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (v.type !== "bool") throw new FormatError(file, `metadata "${key}" is a ${v.type}, expected a bool`);
  return v.value;
}

/** What the loader needs about a GGUF file besides its metadata. */
export interface GgufTensorView {
  readonly path: string;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  /** Torch-order shapes by GGUF tensor name. */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>;
  readF32(name: string): Float32Array;
}

/** The tasktune config of a llama.cpp model file (architectures llama, qwen2, gpt2). */
export function configFromGguf(file: GgufTensorView): ModelConfig {
  const { path, metadata: meta } = file;
  const arch = stringValue(meta, "general.architecture", path);
  if (arch === undefined) throw new FormatError(path, 'no "general.architecture" in the metadata');
  const type = stringValue(meta, "general.type", path);
  if (type === "adapter") throw new FormatError(path, "is an adapter (general.type = adapter), not a model");
  const num = (k: string) => numberValue(meta, `${arch}.${k}`, path);
  const need = (k: string) => {
    const v = num(k);
    if (v === undefined) throw new FormatError(path, `required metadata "${arch}.${k}" is missing`);
    return v;
  };
  const has = (name: string) => file.tensors.has(name);
  const tokenId = (k: string) => numberValue(meta, `tokenizer.ggml.${k}`, path);
  const embd = file.tensors.get("token_embd.weight");
  if (!embd) throw new FormatError(path, 'no tensor "token_embd.weight"');
  const vocabSize = embd.shape[0]!;
  const eos = tokenId("eos_token_id");

  if (arch === "llama" || arch === "qwen2") {
    const hiddenSize = need("embedding_length");
    const numHeads = need("attention.head_count");
    const numKvHeads = num("attention.head_count_kv") ?? numHeads;
    const headDim = num("attention.key_length") ?? hiddenSize / numHeads;
    const valueLength = num("attention.value_length") ?? headDim;
    if (valueLength !== headDim) throw new FormatError(path, `key_length ${headDim} and value_length ${valueLength} differ; tasktune's Llama needs them equal`);
    const ropeDims = num("rope.dimension_count") ?? headDim;
    if (ropeDims !== headDim) throw new FormatError(path, `rope.dimension_count ${ropeDims} differs from the head size ${headDim} (partial rotary embeddings are not supported)`);
    if (num("expert_count")) throw new FormatError(path, "mixture-of-experts models are not supported");
    const maxPositionEmbeddings = need("context_length");
    const ropeTheta = num("rope.freq_base") ?? 10000;
    const config: LlamaFamilyConfig = {
      family: "llama",
      modelType: arch,
      vocabSize,
      hiddenSize,
      intermediateSize: need("feed_forward_length"),
      numLayers: need("block_count"),
      numHeads,
      numKvHeads,
      headDim,
      rmsNormEps: need("attention.layer_norm_rms_epsilon"),
      ropeTheta,
      ropeScaling: { type: "none" },
      maxPositionEmbeddings,
      attentionBias: arch === "qwen2" ? { qkv: true, output: false } : { qkv: has("blk.0.attn_q.bias"), output: has("blk.0.attn_output.bias") },
      mlpBias: arch === "llama" && has("blk.0.ffn_up.bias"),
      tieWordEmbeddings: !has("output.weight"),
      // llama.cpp's llama architecture attends over the whole context.
      slidingWindow: undefined,
      hiddenAct: "silu",
      bosTokenId: tokenId("bos_token_id"),
      eosTokenIds: eos === undefined ? [] : [eos],
      padTokenId: tokenId("padding_token_id"),
    };
    if (arch === "llama" && config.attentionBias.qkv !== has("blk.0.attn_k.bias")) {
      throw new FormatError(path, "has a bias on some of attn_q/attn_k but not all; tasktune's Llama needs all or none");
    }
    config.ropeScaling = ropeScalingFromGguf(file, arch, config);
    return config;
  }
  if (arch === "gpt2") {
    const hiddenSize = need("embedding_length");
    const config: Gpt2Config = {
      family: "gpt2",
      modelType: "gpt2",
      vocabSize,
      hiddenSize,
      numLayers: need("block_count"),
      numHeads: need("attention.head_count"),
      intermediateSize: num("feed_forward_length") ?? 4 * hiddenSize,
      maxPositions: file.tensors.get("position_embd.weight")?.shape[0] ?? need("context_length"),
      layerNormEps: need("attention.layer_norm_epsilon"),
      activation: "gelu_new",
      scaleAttnWeights: true,
      scaleAttnByInverseLayerIdx: false,
      reorderAndUpcastAttn: false,
      tieWordEmbeddings: !has("output.weight"),
      bosTokenId: tokenId("bos_token_id"),
      eosTokenIds: eos === undefined ? [] : [eos],
    };
    return config;
  }
  throw new FormatError(path, `llama.cpp architecture "${arch}" is not supported (supported: llama, qwen2, gpt2)`);
}

/**
 * RoPE scaling from rope.scaling.* keys, or Llama 3 scaling from a rope_freqs tensor: its
 * per-frequency divisors determine factor and the ramp (low/high_freq_factor relative to the
 * original context), which are recovered and checked by recomputing the tensor.
 */
function ropeScalingFromGguf(file: GgufTensorView, arch: string, c: LlamaFamilyConfig): RopeScaling {
  const { path, metadata: meta } = file;
  const num = (k: string) => numberValue(meta, `${arch}.${k}`, path);
  const type = stringValue(meta, `${arch}.rope.scaling.type`, path) ?? "none";
  const factor = num("rope.scaling.factor") ?? num("rope.scale_linear") ?? 0;
  const original = num("rope.scaling.original_context_length") ?? c.maxPositionEmbeddings;
  if (file.tensors.has("rope_freqs.weight")) {
    if (factor !== 0 && factor !== 1) throw new FormatError(path, `has both rope_freqs.weight and rope.scaling.factor ${factor}; tasktune supports one or the other`);
    return llama3FromFreqFactors(file.readF32("rope_freqs.weight"), c, original, path);
  }
  if (type === "none" || factor === 0 || factor === 1) return { type: "none" };
  if (type === "linear") return { type: "linear", factor };
  if (type === "yarn") {
    const attnFactor = num("rope.scaling.attn_factor") ?? 1;
    if (num("rope.scaling.yarn_log_multiplier")) throw new FormatError(path, "YaRN with rope.scaling.yarn_log_multiplier (mscale_all_dim) is not supported");
    return {
      type: "yarn", factor, originalMaxPositionEmbeddings: original,
      // What llama.cpp computes with for these architectures, whatever yarn_beta_fast/slow say.
      betaFast: 32,
      betaSlow: 1,
      attentionFactor: attnFactor * (1 + 0.1 * Math.log(factor)),
      truncate: true,
    };
  }
  throw new FormatError(path, `RoPE scaling type "${type}" is not supported (supported: none, linear, yarn, Llama 3 rope_freqs)`);
}

function llama3FromFreqFactors(factors: Float32Array, c: LlamaFamilyConfig, original: number, path: string): RopeScaling {
  const dim = c.headDim;
  if (factors.length !== dim / 2) throw new FormatError(path, `rope_freqs.weight has ${factors.length} values, expected ${dim / 2}`);
  const factor = Math.max(...factors);
  if (factor <= 1) return { type: "none" };
  // transformers' ramp: s = (original / wavelen - low) / (high - low), and 1/f = (1 - s)/factor + s,
  // so s is linear in x = original / wavelen; the factors fix that line only where they ramp.
  const x = (i: number) => (original / c.ropeTheta ** ((2 * i) / dim)) / (2 * Math.PI);
  const ones: number[] = [];
  const full: number[] = [];
  const ramp: [number, number][] = [];
  factors.forEach((f, i) => {
    if (Math.abs(f - 1) < 1e-6) ones.push(x(i));
    else if (Math.abs(f - factor) < 1e-6 * factor) full.push(x(i));
    else ramp.push([x(i), (1 / f - 1 / factor) / (1 - 1 / factor)]);
  });
  // Unscaled frequencies lie above `high`, fully scaled ones below `low`.
  const above = ones.length ? Math.min(...ones) : Infinity;
  const below = full.length ? Math.max(...full) : 0;
  let low: number;
  let high: number;
  if (ramp.length >= 2) {
    const [[x0, s0], [x1, s1]] = [ramp[0]!, ramp[ramp.length - 1]!];
    const slope = (s1 - s0) / (x1 - x0);
    low = x0 - s0 / slope;
    high = low + 1 / slope;
  } else if (ramp.length === 1) {
    // Any ramp through the one point that leaves its neighbours outside fits.
    const [[x1, s1]] = ramp as [[number, number]];
    const width = 0.5 * Math.min(s1 > 0 ? (x1 - below) / s1 : Infinity, s1 < 1 ? (above - x1) / (1 - s1) : Infinity);
    low = x1 - s1 * width;
    high = low + width;
  } else {
    // A step: cut anywhere between the last fully scaled and the first unscaled frequency.
    const gap = Number.isFinite(above) ? above - below : below;
    low = below + 0.25 * gap;
    high = below + 0.75 * gap;
  }
  const scaling = { type: "llama3" as const, factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original };
  const again = llama3FreqFactors(dim, c.ropeTheta, scaling);
  const worst = Math.max(...again.map((v, i) => Math.abs(v - factors[i]!) / factors[i]!));
  if (!(worst < 1e-5)) throw new FormatError(path, `rope_freqs.weight does not follow Llama 3 RoPE scaling (best fit is off by ${worst.toExponential(2)}); such models are not supported`);
  return scaling;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer metadata

/** llama.cpp's token types (llama_token_type). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** Split regexes of tokenizer.json files and the llama.cpp pre-tokenizer that reproduces each. */
const SPLIT_PRE: Record<string, { pre: string; normalizer?: string }> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": { pre: "llama-bpe" },
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": { pre: "qwen2", normalizer: "NFC" },
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+": { pre: "gpt-2" },
};

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The llama.cpp pre-tokenizer name (tokenizer.ggml.pre) whose splitting equals this
 * tokenizer.json's normalizer + pre_tokenizer, or an explanation of why none does.
 */
export function detectPreTokenizer(tokenizer: Json): { pre: string } | { error: string } {
  const normalizer = tokenizer.normalizer;
  const normalizerType = isObject(normalizer) ? String(normalizer.type) : undefined;
  const pt = tokenizer.pre_tokenizer;
  if (!isObject(pt)) return { error: "the tokenizer has no pre_tokenizer" };
  const byteLevel = (x: Json, regex: boolean) => x.type === "ByteLevel" && Boolean(x.use_regex ?? true) === regex && !x.add_prefix_space;
  let found: { pre: string; normalizer?: string } | undefined;
  if (byteLevel(pt, true)) found = { pre: "gpt-2" };
  if (pt.type === "Sequence" && Array.isArray(pt.pretokenizers)) {
    const parts = pt.pretokenizers.filter(isObject);
    const [first, second] = parts;
    if (parts.length === 2 && first?.type === "Split" && isObject(first.pattern) && typeof first.pattern.Regex === "string" &&
        first.behavior === "Isolated" && !first.invert && second && byteLevel(second, false)) {
      found = SPLIT_PRE[first.pattern.Regex];
    }
    if (parts.length === 2 && first?.type === "Digits" && first.individual_digits === true && second && byteLevel(second, true)) found = { pre: "smollm" };
  }
  if (!found) {
    return { error: `its pre_tokenizer (${JSON.stringify(pt).slice(0, 200)}) matches none that tasktune maps to llama.cpp (gpt-2, llama-bpe, qwen2, smollm); pass the llama.cpp pre-tokenizer name explicitly` };
  }
  if ((normalizerType ?? "none") !== (found.normalizer ?? "none")) {
    return { error: `its normalizer (${normalizerType ?? "none"}) is not the one llama.cpp's "${found.pre}" pre-tokenizer assumes (${found.normalizer ?? "none"})` };
  }
  return { pre: found.pre };
}

export interface TokenizerSource {
  /** tokenizer.json, parsed. */
  tokenizer: Json;
  /** tokenizer_config.json, parsed ({} when absent). */
  tokenizerConfig: Json;
  chatTemplate?: string;
  /** Names tokenizer.json in errors. */
  file: string;
}

/**
 * tokenizer.ggml.* keys for a byte-level BPE tokenizer.json, as convert_hf_to_gguf.py's
 * _set_vocab_gpt2 writes them: every id below vocabSize gets a token (missing ids become
 * [PAD<id>] of type UNUSED), added special tokens are CONTROL, other added tokens USER_DEFINED.
 */
export function tokenizerMetadata(
  source: TokenizerSource,
  specialIds: { bos?: number; eos?: number; pad?: number },
  vocabSize: number,
  options: { pre?: string } = {},
): GgufMetadata {
  const { tokenizer: t, tokenizerConfig: tc, file } = source;
  const model = t.model;
  if (!isObject(model) || model.type !== "BPE") {
    throw new FormatError(file, `model type ${isObject(model) ? JSON.stringify(model.type) : "?"} cannot be exported: only byte-level BPE tokenizers (tokenizer.ggml.model "gpt2") are supported`);
  }
  if (model.byte_fallback) throw new FormatError(file, "BPE with byte_fallback (SentencePiece-style) cannot be exported yet; only byte-level BPE is supported");
  if (!isObject(t.decoder) || t.decoder.type !== "ByteLevel") throw new FormatError(file, `decoder ${JSON.stringify(t.decoder)} is not ByteLevel; only byte-level BPE is supported`);
  let pre = options.pre;
  if (pre === undefined) {
    const detected = detectPreTokenizer(t);
    if ("error" in detected) throw new FormatError(file, `cannot choose a llama.cpp pre-tokenizer: ${detected.error}`);
    pre = detected.pre;
  }
  const vocab = model.vocab;
  if (!isObject(vocab)) throw new FormatError(file, "model.vocab is not an object");
  const tokens: (string | undefined)[] = new Array(vocabSize);
  const types = new Array<number>(vocabSize).fill(TOKEN_TYPE.NORMAL);
  for (const [token, id] of Object.entries(vocab)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new FormatError(file, `model.vocab["${token}"] is not a token id`);
    if (id >= vocabSize) throw new FormatError(file, `token "${token}" has id ${id}, outside the model's vocab_size ${vocabSize}`);
    tokens[id] = token;
  }
  for (const added of Array.isArray(t.added_tokens) ? t.added_tokens : []) {
    if (!isObject(added) || typeof added.id !== "number" || typeof added.content !== "string") continue;
    if (added.id >= vocabSize) throw new FormatError(file, `added token "${added.content}" has id ${added.id}, outside the model's vocab_size ${vocabSize}`);
    tokens[added.id] = added.content;
    types[added.id] = added.special || looksSpecial(added.content) ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  }
  const list = Array.from({ length: vocabSize }, (_, id) => {
    if (tokens[id] !== undefined) return tokens[id]!;
    types[id] = TOKEN_TYPE.UNUSED;
    return `[PAD${id}]`;
  });
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && m.every((p) => typeof p === "string")) return `${m[0]} ${m[1]}`;
    throw new FormatError(file, `model.merges[${i}] is neither "a b" nor ["a", "b"]`);
  });
  const meta: GgufMetadata = new Map();
  meta.set("tokenizer.ggml.model", str("gpt2"));
  meta.set("tokenizer.ggml.pre", str(pre));
  meta.set("tokenizer.ggml.tokens", { type: "array", itemType: "string", value: list });
  meta.set("tokenizer.ggml.token_type", { type: "array", itemType: "i32", value: types });
  meta.set("tokenizer.ggml.merges", { type: "array", itemType: "string", value: merges });
  const idOf = (field: string): number | undefined => {
    const v = tc[field];
    const content = typeof v === "string" ? v : isObject(v) && typeof v.content === "string" ? v.content : undefined;
    if (content === undefined) return undefined;
    const id = list.indexOf(content);
    return id >= 0 ? id : undefined;
  };
  const bos = idOf("bos_token") ?? specialIds.bos;
  const eos = idOf("eos_token") ?? specialIds.eos;
  const pad = idOf("pad_token") ?? specialIds.pad;
  const unk = idOf("unk_token");
  if (eos !== undefined) meta.set("tokenizer.ggml.eos_token_id", u32(eos));
  if (pad !== undefined) meta.set("tokenizer.ggml.padding_token_id", u32(pad));
  if (bos !== undefined) meta.set("tokenizer.ggml.bos_token_id", u32(bos));
  if (unk !== undefined) meta.set("tokenizer.ggml.unknown_token_id", u32(unk));
  const adds = specialsAdded(t, list);
  const addBos = typeof tc.add_bos_token === "boolean" ? tc.add_bos_token : adds.bos !== undefined;
  const addEos = typeof tc.add_eos_token === "boolean" ? tc.add_eos_token : adds.eos !== undefined;
  if (addBos && adds.bos !== undefined && bos !== adds.bos) meta.set("tokenizer.ggml.bos_token_id", u32(adds.bos));
  if (addEos && adds.eos !== undefined && eos !== adds.eos) meta.set("tokenizer.ggml.eos_token_id", u32(adds.eos));
  if (addBos && !meta.has("tokenizer.ggml.bos_token_id")) throw new FormatError(file, "adds a BOS token but names none");
  meta.set("tokenizer.ggml.add_bos_token", { type: "bool", value: addBos });
  meta.set("tokenizer.ggml.add_eos_token", { type: "bool", value: addEos });
  if (source.chatTemplate !== undefined) meta.set("tokenizer.chat_template", str(source.chatTemplate));
  return meta;
}

/** convert_hf_to_gguf.py's does_token_look_special. */
function looksSpecial(token: string): boolean {
  return ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(token) ||
    (token.startsWith("<|") && token.endsWith("|>")) || (token.startsWith("<｜") && token.endsWith("｜>")) ||
    (token.startsWith("<unused") && token.endsWith(">"));
}

/** The special tokens a TemplateProcessing post-processor puts before and after a single sequence. */
function specialsAdded(t: Json, list: string[]): { bos?: number; eos?: number } {
  const pp = t.post_processor;
  const processors = isObject(pp) && pp.type === "Sequence" && Array.isArray(pp.processors) ? pp.processors.filter(isObject) : isObject(pp) ? [pp] : [];
  const template = processors.find((p) => p.type === "TemplateProcessing");
  if (!template || !Array.isArray(template.single)) return {};
  const single = template.single.filter(isObject);
  const seqAt = single.findIndex((p) => isObject(p.Sequence));
  const idOfPiece = (p: Json | undefined) => {
    const special = p && isObject(p.SpecialToken) ? String(p.SpecialToken.id) : undefined;
    if (special === undefined) return undefined;
    const entry = isObject(template.special_tokens) ? template.special_tokens[special] : undefined;
    const ids = isObject(entry) && Array.isArray(entry.ids) ? entry.ids : undefined;
    return typeof ids?.[0] === "number" ? ids[0] : list.indexOf(special) >= 0 ? list.indexOf(special) : undefined;
  };
  return { bos: seqAt > 0 ? idOfPiece(single[seqAt - 1]) : undefined, eos: seqAt >= 0 ? idOfPiece(single[seqAt + 1]) : undefined };
}

/** Pre-tokenizers by llama.cpp name, as tokenizer.json writes them. */
function preTokenizerJson(pre: string, file: string): { preTokenizer: Json; normalizer: Json | null; ignoreMerges: boolean; addBosDefault: boolean } {
  const byteLevel = (useRegex: boolean) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
  const split = (regex: string) => ({
    type: "Sequence",
    pretokenizers: [{ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false }, byteLevel(false)],
  });
  const regexOf = (name: string) => Object.entries(SPLIT_PRE).find(([, v]) => v.pre === name)![0];
  switch (pre) {
    case "gpt-2":
    case "default":
      return { preTokenizer: byteLevel(true), normalizer: null, ignoreMerges: false, addBosDefault: false };
    case "llama-bpe":
    case "llama3":
    case "llama-v3":
      return { preTokenizer: split(regexOf("llama-bpe")), normalizer: null, ignoreMerges: true, addBosDefault: true };
    case "qwen2":
      return { preTokenizer: split(regexOf("qwen2")), normalizer: { type: "NFC" }, ignoreMerges: false, addBosDefault: false };
    case "smollm":
      return {
        preTokenizer: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true }, byteLevel(true)] },
        normalizer: null, ignoreMerges: false, addBosDefault: false,
      };
    default:
      throw new FormatError(file, `tokenizer.ggml.pre "${pre}" is not supported (supported: gpt-2, default, llama-bpe, qwen2, smollm)`);
  }
}

/**
 * A tokenizer.json object (and tokenizer_config.json fields) equivalent to a GGUF's gpt2-type
 * tokenizer metadata, for @huggingface/tokenizers.
 */
export function tokenizerJsonFromGguf(meta: ReadonlyMap<string, GgufValue>, file: string): { tokenizer: Json; tokenizerConfig: Json } {
  const model = stringValue(meta, "tokenizer.ggml.model", file);
  if (model === undefined) throw new FormatError(file, "has no tokenizer (tokenizer.ggml.model)");
  if (model !== "gpt2") {
    throw new FormatError(file, `tokenizer.ggml.model "${model}" is not supported: tasktune reads byte-level BPE ("gpt2") tokenizers from GGUF; ` +
      "load the weights with this file and the tokenizer from a Hugging Face tokenizer.json instead");
  }
  const arrayOf = (key: string) => {
    const v = meta.get(key);
    if (v === undefined) return undefined;
    if (v.type !== "array") throw new FormatError(file, `metadata "${key}" is not an array`);
    return v.value as unknown[];
  };
  const tokens = arrayOf("tokenizer.ggml.tokens") as string[] | undefined;
  if (!tokens) throw new FormatError(file, "has no tokenizer.ggml.tokens");
  const types = (arrayOf("tokenizer.ggml.token_type") as number[] | undefined) ?? [];
  const merges = (arrayOf("tokenizer.ggml.merges") as string[] | undefined) ?? [];
  const pre = stringValue(meta, "tokenizer.ggml.pre", file) ?? "default";
  const { preTokenizer, normalizer, ignoreMerges, addBosDefault } = preTokenizerJson(pre, file);

  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((token, id) => {
    const type = Number(types[id] ?? TOKEN_TYPE.NORMAL);
    if (type === TOKEN_TYPE.UNUSED) return;
    if (type === TOKEN_TYPE.CONTROL || type === TOKEN_TYPE.USER_DEFINED) {
      added.push({ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type === TOKEN_TYPE.CONTROL });
    }
    if (!Object.hasOwn(vocab, token)) vocab[token] = id;
  });
  const id = (k: string) => numberValue(meta, `tokenizer.ggml.${k}`, file);
  const bos = id("bos_token_id");
  const eos = id("eos_token_id");
  const addBos = boolValue(meta, "tokenizer.ggml.add_bos_token", file) ?? addBosDefault;
  const addEos = boolValue(meta, "tokenizer.ggml.add_eos_token", file) ?? false;
  const single: Json[] = [{ Sequence: { id: "A", type_id: 0 } }];
  const pair: Json[] = [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }];
  const specialTokens: Json = {};
  const addSpecial = (tokenId: number | undefined, where: "start" | "end") => {
    if (tokenId === undefined || tokens[tokenId] === undefined) throw new FormatError(file, `add_${where === "start" ? "bos" : "eos"}_token is set but the token id is missing or out of range`);
    const content = tokens[tokenId]!;
    specialTokens[content] = { id: content, ids: [tokenId], tokens: [content] };
    const piece = { SpecialToken: { id: content, type_id: 0 } };
    if (where === "start") {
      single.unshift(piece);
      pair.unshift(piece);
    } else {
      single.push(piece);
      pair.push(piece);
    }
  };
  if (addBos) addSpecial(bos, "start");
  if (addEos) addSpecial(eos, "end");
  const tokenizer: Json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer,
    pre_tokenizer: preTokenizer,
    post_processor: { type: "TemplateProcessing", single, pair, special_tokens: specialTokens },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: ignoreMerges,
      vocab,
      merges: merges.map((m) => {
        // llama.cpp splits at the first space after the first character (a merge may start with a space-like symbol).
        const at = m.indexOf(" ", 1);
        if (at < 0) throw new FormatError(file, `tokenizer.ggml.merges entry "${m}" has no space`);
        return [m.slice(0, at), m.slice(at + 1)];
      }),
    },
  };
  const tokenizerConfig: Json = {};
  const content = (tokenId: number | undefined) => (tokenId !== undefined && tokenId >= 0 && tokenId < tokens.length ? tokens[tokenId] : undefined);
  if (content(bos) !== undefined) tokenizerConfig.bos_token = content(bos);
  if (content(eos) !== undefined) tokenizerConfig.eos_token = content(eos);
  if (content(id("padding_token_id")) !== undefined) tokenizerConfig.pad_token = content(id("padding_token_id"));
  if (content(id("unknown_token_id")) !== undefined) tokenizerConfig.unk_token = content(id("unknown_token_id"));
  const template = stringValue(meta, "tokenizer.chat_template", file);
  if (template !== undefined) tokenizerConfig.chat_template = template;
  return { tokenizer, tokenizerConfig };
}
