// Export: the layer beside train/merge/eval that turns a checkpoint (Hugging Face folder or GGUF)
// and an optional adapter (PEFT folder or GGUF LoRA) into what other tools load:
//   gguf         a model for llama.cpp (f32/f16/bf16/q8_0/q4_0/q4_k), or an adapter for llama.cpp --lora
//   safetensors  a (merged) Hugging Face checkpoint folder
//   peft         an adapter in PEFT's layout
import fs from "node:fs";
import type { Backend } from "../engine/backend.ts";
import type { LoraAdapter } from "../adapters/lora.ts";
import { loadAdapter } from "../adapters/peft-io.ts";
import { loadConfig } from "../io/hf-config.ts";
import { openCheckpoint } from "../io/safetensors.ts";
import { loadModel } from "../models/index.ts";
import { isGgufPath, openGgufWeights } from "../models/gguf-loader.ts";
import type { Model, WeightSource } from "../models/model.ts";
import { readLoraGguf, exportLoraGguf, GGUF_LORA_DTYPES, type GgufLoraDtype } from "./gguf-lora.ts";
import {
  exportModelGguf, ggufTokenizerMetadata, hfTokenizerMetadata, modelName, GGUF_MODEL_DTYPES, type GgufModelDtype,
} from "./gguf-model.ts";
import { exportPeft, exportSafetensors, SAFETENSORS_DTYPES, type SafetensorsExportDtype } from "./hf.ts";

export { exportModelGguf, hfTokenizerMetadata, ggufTokenizerMetadata, readTokenizerSource, tensorDtype, GGUF_MODEL_DTYPES, type GgufModelDtype, type GgufModelExport, type GgufExportResult } from "./gguf-model.ts";
export { exportLoraGguf, readLoraGguf, GGUF_LORA_DTYPES, type GgufLoraDtype, type GgufLoraExport } from "./gguf-lora.ts";
export { exportSafetensors, exportPeft, hfConfigJson, SAFETENSORS_DTYPES, type SafetensorsExport, type SafetensorsExportDtype } from "./hf.ts";

export const EXPORT_TARGETS = ["gguf", "safetensors", "peft"] as const;
export type ExportTarget = (typeof EXPORT_TARGETS)[number];

export interface ExportOptions {
  /** Hugging Face checkpoint folder, or a llama.cpp .gguf model. */
  model: string;
  /** PEFT adapter folder, or a llama.cpp GGUF LoRA (.gguf). */
  adapter?: string;
  to: ExportTarget;
  /** A .gguf file for gguf; a folder for safetensors and peft. */
  out: string;
  dtype?: string;
  /** With `to: "gguf"` and an adapter: write the merged model rather than the adapter. */
  merge?: boolean;
  /** tokenizer.ggml.pre to write instead of the one detected from tokenizer.json. */
  tokenizerPre?: string;
  /** general.name (default: the model's folder or file name). */
  name?: string;
  maxShardBytes?: number;
  /** Replace an existing --out. */
  overwrite?: boolean;
  backend: Backend;
  onProgress?: (message: string) => void;
}

export interface ExportResult {
  kind: "gguf-model" | "gguf-lora" | "safetensors" | "peft";
  /** Files written. */
  paths: string[];
  /** One line for the user. */
  summary: string;
}

export function exportModel(o: ExportOptions): ExportResult {
  if (!(EXPORT_TARGETS as readonly string[]).includes(o.to)) throw new Error(`--to must be one of ${EXPORT_TARGETS.join(", ")}, got "${o.to}"`);
  if (fs.existsSync(o.out) && !o.overwrite) {
    const empty = fs.statSync(o.out).isDirectory() && fs.readdirSync(o.out).length === 0;
    if (!empty) throw new Error(`--out ${o.out} exists (pass --force to replace it)`);
  }
  if (o.merge && !o.adapter) throw new Error("--merge needs --adapter");
  if (o.to === "peft" && !o.adapter) throw new Error("--to peft converts an adapter: pass --adapter");
  if (o.to === "gguf") {
    if (!o.out.toLowerCase().endsWith(".gguf")) throw new Error(`--out ${o.out}: a GGUF export needs a file name ending in .gguf`);
    if (o.adapter && !o.merge) return adapterToGguf(o);
    return modelToGguf(o);
  }
  if (o.to === "safetensors") return modelToSafetensors(o);
  return adapterToPeft(o);
}

function checkDtype<T extends string>(dtype: string | undefined, allowed: readonly T[], what: string): T | undefined {
  if (dtype !== undefined && !(allowed as readonly string[]).includes(dtype)) {
    throw new Error(`--dtype ${dtype} is not available for ${what}; choose one of ${allowed.join(", ")}`);
  }
  return dtype as T | undefined;
}

function modelToGguf(o: ExportOptions): ExportResult {
  const dtype = checkDtype<GgufModelDtype>(o.dtype, GGUF_MODEL_DTYPES, "a GGUF model") ?? "f32";
  const name = o.name ?? modelName(o.model);
  const onTensor = o.onProgress ? (t: string, i: number, n: number) => o.onProgress!(`[${i}/${n}] ${t}`) : undefined;
  if (o.adapter) {
    // Merged: the model and its adapter in memory, folded, then read back per tensor.
    const model = loadModel(o.backend, o.model);
    try {
      const adapter = openAdapter(model, o.adapter, o.backend);
      adapter.merge();
      adapter.detach();
      const tokenizer = isGgufPath(o.model) ? ggufTokenizerFrom(o.model, o.backend) : hfTokenizerMetadata(o.model, model.config, { pre: o.tokenizerPre });
      const r = exportModelGguf({ config: model.config, weights: modelWeights(model, o.model), tokenizer, out: o.out, dtype, name, backend: o.backend, onTensor });
      adapter.free();
      return { kind: "gguf-model", paths: [r.path], summary: `wrote ${name} merged with ${o.adapter} to ${r.path} (${r.tensors} tensors: ${describeTypes(r.types)})` };
    } finally {
      model.free();
    }
  }
  // Base model: streamed from the checkpoint, one tensor at a time, without building the model.
  if (isGgufPath(o.model)) {
    const weights = openGgufWeights(o.model, o.backend);
    try {
      const tokenizer = ggufTokenizerMetadata(weights.file.metadata);
      if (o.tokenizerPre) tokenizer.set("tokenizer.ggml.pre", { type: "string", value: o.tokenizerPre });
      const r = exportModelGguf({ config: weights.config, weights, tokenizer, out: o.out, dtype, name, backend: o.backend, onTensor });
      return { kind: "gguf-model", paths: [r.path], summary: `wrote ${name} to ${r.path} (${r.tensors} tensors: ${describeTypes(r.types)})` };
    } finally {
      weights.close();
    }
  }
  const config = loadConfig(o.model);
  const tokenizer = hfTokenizerMetadata(o.model, config, { pre: o.tokenizerPre });
  const weights = openCheckpoint(o.model);
  try {
    const r = exportModelGguf({ config, weights, tokenizer, out: o.out, dtype, name, backend: o.backend, onTensor });
    return { kind: "gguf-model", paths: [r.path], summary: `wrote ${name} to ${r.path} (${r.tensors} tensors: ${describeTypes(r.types)})` };
  } finally {
    weights.close();
  }
}

function adapterToGguf(o: ExportOptions): ExportResult {
  const dtype = checkDtype<GgufLoraDtype>(o.dtype, GGUF_LORA_DTYPES, "a GGUF LoRA adapter") ?? "f32";
  const model = loadModel(o.backend, o.model);
  try {
    const adapter = openAdapter(model, o.adapter!, o.backend);
    try {
      const r = exportLoraGguf({ adapter, out: o.out, dtype, name: o.name ?? modelName(o.adapter!) });
      return { kind: "gguf-lora", paths: [r.path], summary: `wrote LoRA adapter ${o.adapter} (${adapter.modules.length} modules, alpha ${r.alpha}) to ${r.path}` };
    } finally {
      adapter.free();
    }
  } finally {
    model.free();
  }
}

function modelToSafetensors(o: ExportOptions): ExportResult {
  const dtype = checkDtype<SafetensorsExportDtype>(o.dtype, SAFETENSORS_DTYPES, "safetensors") ?? "f32";
  const model = loadModel(o.backend, o.model);
  try {
    if (o.adapter) {
      const adapter = openAdapter(model, o.adapter, o.backend);
      adapter.merge();
      adapter.detach();
      adapter.free();
    }
    let source: Parameters<typeof exportSafetensors>[0]["source"];
    if (isGgufPath(o.model)) {
      const weights = openGgufWeights(o.model, o.backend);
      weights.close();
      source = { ggufMetadata: weights.file.metadata, file: o.model };
    } else {
      source = { dir: o.model };
    }
    const paths = exportSafetensors({ model, source, out: o.out, dtype, maxShardBytes: o.maxShardBytes, overwrite: o.overwrite });
    return { kind: "safetensors", paths, summary: `wrote ${o.adapter ? "the merged model" : "the model"} (${dtype}) to ${o.out}` };
  } finally {
    model.free();
  }
}

function adapterToPeft(o: ExportOptions): ExportResult {
  if (o.dtype !== undefined && o.dtype !== "f32") throw new Error("PEFT adapters are written in f32 (--dtype f32)");
  const model = loadModel(o.backend, o.model);
  try {
    const adapter = openAdapter(model, o.adapter!, o.backend);
    try {
      const paths = exportPeft(adapter, o.out, o.overwrite);
      return { kind: "peft", paths, summary: `wrote PEFT adapter (${adapter.modules.length} modules, r=${adapter.config.r}) to ${o.out}` };
    } finally {
      adapter.free();
    }
  } finally {
    model.free();
  }
}

/** A PEFT folder or a llama.cpp GGUF LoRA, attached to `model`. */
export function openAdapter(model: Model, location: string, backend: Backend): LoraAdapter {
  return isGgufPath(location) ? readLoraGguf(model, location, backend) : loadAdapter(model, location);
}

/** A model's current parameters as a weight source (after merging an adapter into them). */
export function modelWeights(model: Model, path = "model"): WeightSource {
  return {
    path,
    tensors: new Map(model.parameterNames.map((n) => [n, { shape: model.param(n).torchShape }])),
    readF32: (name) => model.param(name).getF32(),
  };
}

function ggufTokenizerFrom(path: string, backend: Backend) {
  const weights = openGgufWeights(path, backend);
  weights.close();
  return ggufTokenizerMetadata(weights.file.metadata);
}

function describeTypes(types: Record<string, number>): string {
  return Object.entries(types).map(([t, n]) => `${n} ${t}`).join(", ");
}
