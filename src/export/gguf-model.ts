// A model as a llama.cpp GGUF: architecture metadata and tensor names as convert_hf_to_gguf.py
// writes them, the tokenizer as tokenizer.ggml.* keys, weights converted or quantized by ggml.
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import type { Backend } from "../engine/backend.ts";
import { GGML_TYPE, isQuantized, type DType } from "../engine/tensor.ts";
import { FormatError } from "../io/errors.ts";
import { readJsonFile, readTextFile } from "../io/files.ts";
import { quantize, writeGguf, type GgufTensorData, type GgufValue } from "../io/gguf.ts";
import {
  GGUF_FILE_TYPE, ggufShape, modelMetadata, tensorMappings, toGgufLayout, tokenizerMetadata, type GgufMetadata, type TokenizerSource,
} from "../io/gguf-names.ts";
import type { ModelConfig } from "../io/hf-config.ts";
import type { WeightSource } from "../models/model.ts";

/** Types a model GGUF can be written in. */
export const GGUF_MODEL_DTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"] as const;
export type GgufModelDtype = (typeof GGUF_MODEL_DTYPES)[number];

export interface GgufModelExport {
  config: ModelConfig;
  /** HF-named tensors (a checkpoint, a GGUF seen through GgufWeights, or a model's parameters). */
  weights: WeightSource;
  /** tokenizer.* keys; see hfTokenizerMetadata. llama.cpp refuses a model without a vocabulary. */
  tokenizer: GgufMetadata;
  out: string;
  dtype?: GgufModelDtype;
  /** general.name */
  name: string;
  backend: Backend;
  /** Called after each tensor is converted. */
  onTensor?: (name: string, index: number, total: number) => void;
}

export interface GgufExportResult {
  path: string;
  tensors: number;
  /** Tensor types used, with counts (1-D tensors stay f32; rows a block cannot divide fall back). */
  types: Record<string, number>;
}

/**
 * The type a tensor is stored as: 1-D tensors (norms, biases) stay f32 as in llama.cpp; a
 * quantized type whose block does not divide the row falls back to q8_0, then f16, as
 * llama.cpp's quantizer does for such tensors.
 */
export function tensorDtype(shape: readonly number[], requested: GgufModelDtype, backend: Backend): DType {
  if (shape.length < 2) return "f32";
  if (!isQuantized(requested)) return requested;
  const row = shape[shape.length - 1]!;
  const fits = (t: DType) => row % backend.ggml.ggml_blck_size(GGML_TYPE[t]) === 0;
  if (fits(requested)) return requested;
  return fits("q8_0") ? "q8_0" : "f16";
}

export function exportModelGguf(e: GgufModelExport): GgufExportResult {
  const dtype = e.dtype ?? "f32";
  if (!(GGUF_MODEL_DTYPES as readonly string[]).includes(dtype)) throw new Error(`--dtype ${dtype} is not one of ${GGUF_MODEL_DTYPES.join(", ")}`);
  const { metadata, extraTensors } = modelMetadata(e.config, e.name);
  metadata.set("general.file_type", { type: "u32", value: GGUF_FILE_TYPE[dtype]! });
  metadata.set("general.quantization_version", { type: "u32", value: 2 });
  for (const [k, v] of e.tokenizer) metadata.set(k, v);

  const mappings = tensorMappings(e.config);
  const missing = mappings.filter((m) => !e.weights.tensors.has(m.hf)).map((m) => m.hf);
  if (missing.length) throw new FormatError(e.weights.path, `missing tensors: ${missing.join(", ")}`);
  const tensors: GgufTensorData[] = [];
  const types: Record<string, number> = {};
  const ggml = e.backend.ggml;
  mappings.forEach((m, i) => {
    const actual = e.weights.tensors.get(m.hf)!.shape;
    if (actual.join() !== m.shape.join()) {
      throw new FormatError(e.weights.path, `tensor ${m.hf} has shape [${actual.join(", ")}] but the config implies [${m.shape.join(", ")}]`);
    }
    const shape = ggufShape(m.shape, m.layout);
    const values = toGgufLayout(e.weights.readF32(m.hf), m.shape, m.layout);
    const t = tensorDtype(shape, dtype, e.backend);
    let data: ArrayBufferView;
    try {
      data = t === "f32" ? values : quantize(values, [...shape].reverse(), t, ggml);
    } catch (err) {
      throw new Error(`${m.hf} (GGUF ${m.gguf}): ${(err as Error).message}`, { cause: err });
    }
    tensors.push({ name: m.gguf, dtype: t, shape, data });
    types[t] = (types[t] ?? 0) + 1;
    e.onTensor?.(m.gguf, i + 1, mappings.length);
  });
  for (const extra of extraTensors) {
    tensors.push({ name: extra.name, dtype: "f32", shape: [extra.values.length], data: extra.values });
    types.f32 = (types.f32 ?? 0) + 1;
  }
  writeGguf(e.out, { metadata, tensors }, ggml);
  return { path: e.out, tensors: tensors.length, types };
}

/** tokenizer.json, tokenizer_config.json and the chat template of a Hugging Face folder. */
export function readTokenizerSource(dir: string): TokenizerSource {
  const file = join(dir, "tokenizer.json");
  if (!existsSync(file)) {
    throw new FormatError(file, "not found: a GGUF model needs its tokenizer (llama.cpp refuses a model without a vocabulary)");
  }
  const tokenizer = readJsonFile(file) as Record<string, unknown>;
  const configFile = join(dir, "tokenizer_config.json");
  const tokenizerConfig = existsSync(configFile) ? (readJsonFile(configFile) as Record<string, unknown>) : {};
  const jinja = join(dir, "chat_template.jinja");
  const chatTemplate = existsSync(jinja) ? readTextFile(jinja) : typeof tokenizerConfig.chat_template === "string" ? tokenizerConfig.chat_template : undefined;
  return { tokenizer, tokenizerConfig, chatTemplate, file };
}

/** tokenizer.* keys for a Hugging Face folder's tokenizer and this config's special ids and vocab size. */
export function hfTokenizerMetadata(dir: string, config: ModelConfig, options: { pre?: string } = {}): GgufMetadata {
  const special = config.family === "bert" ? {} : { bos: config.bosTokenId, eos: config.eosTokenIds[0], pad: config.family === "llama" ? config.padTokenId : undefined };
  return tokenizerMetadata(readTokenizerSource(dir), special, config.vocabSize, options);
}

/** The tokenizer.* keys of an existing GGUF, to carry over unchanged. */
export function ggufTokenizerMetadata(metadata: ReadonlyMap<string, GgufValue>): GgufMetadata {
  return new Map([...metadata].filter(([k]) => k.startsWith("tokenizer.")));
}

/** A display name for general.name: the folder or file name. */
export function modelName(path: string): string {
  return basename(path.replace(/[/\\]+$/, "")).replace(/\.gguf$/i, "");
}
