// LoRA adapters as llama.cpp GGUF adapters (llama-cli --lora), the layout of llama.cpp's
// convert_lora_to_gguf.py: general.type "adapter", adapter.type "lora", adapter.lora.alpha, and
// per target tensor `<gguf name>.lora_a` (PEFT lora_A [r, in]) and `.lora_b` (lora_B [out, r],
// rows permuted like the Q/K weights they add to). llama.cpp scales every module by alpha / r
// with r read from each tensor; per-module scales that differ from that (rsLoRA, rank_pattern,
// alpha_pattern) are folded into lora_b. And the way back: a GGUF LoRA as a PEFT adapter.
import type { Backend } from "../engine/backend.ts";
import { LoraAdapter, type LoraModule } from "../adapters/lora.ts";
import { loraConfig } from "../adapters/peft-config.ts";
import { FormatError } from "../io/errors.ts";
import { openGguf, quantize, writeGguf, type GgufTensorData } from "../io/gguf.ts";
import { fromGgufLayout, ggufArchFor, tensorMappings, toGgufLayout, type TensorMapping } from "../io/gguf-names.ts";
import type { Model } from "../models/model.ts";

export const GGUF_LORA_DTYPES = ["f32", "f16", "bf16"] as const;
export type GgufLoraDtype = (typeof GGUF_LORA_DTYPES)[number];

/** LoRA tensors apply to the weight, so only the row permutation of a mapping carries over (not a Conv1D transpose). */
function weightMapping(model: Model, module: string): TensorMapping {
  const mapping = tensorMappings(model.config).find((m) => m.hf === `${module}.weight`);
  if (!mapping) {
    throw new Error(`LoRA on ${module} cannot be written for llama.cpp: the GGUF model has no such tensor` +
      (module === "lm_head" ? " (the head is tied to the embeddings)" : ""));
  }
  return mapping;
}

export interface GgufLoraExport {
  adapter: LoraAdapter;
  out: string;
  dtype?: GgufLoraDtype;
  name?: string;
}

export function exportLoraGguf({ adapter, out, dtype = "f32", name }: GgufLoraExport): { path: string; tensors: number; alpha: number } {
  const { model, config } = adapter;
  if (!(GGUF_LORA_DTYPES as readonly string[]).includes(dtype)) throw new Error(`--dtype ${dtype} is not one of ${GGUF_LORA_DTYPES.join(", ")} for a LoRA adapter`);
  if (config.useDora) throw new Error("a DoRA adapter cannot be written as a llama.cpp LoRA (llama.cpp has no magnitude vector); export the merged model instead (--merge or --to safetensors)");
  if (adapter.baseTensors.length) {
    throw new Error(`this adapter also trains base tensors (${adapter.baseTensors.map(([k]) => k).slice(0, 5).join(", ")}), ` +
      "which a llama.cpp LoRA cannot carry; export the merged model instead (--merge or --to safetensors)");
  }
  const alpha = config.loraAlpha;
  const tensors: GgufTensorData[] = [];
  const ggml = model.backend.ggml;
  for (const m of adapter.modules) {
    const mapping = weightMapping(model, m.module);
    const { in: inp, out: outF } = model.linearFeatures(m.module);
    const a = m.a.getF32(); // [r, in]
    let b = m.b.getF32(); // [out, r]
    const llamaScale = alpha !== 0 ? alpha / m.r : 1;
    const fold = m.scale / llamaScale;
    if (fold !== 1) b = b.map((v) => v * fold);
    if (mapping.layout.kind === "rope-permute") b = toGgufLayout(b, [outF, m.r], mapping.layout);
    const encode = (values: Float32Array, shape: number[]) => (dtype === "f32" ? values : quantize(values, [...shape].reverse(), dtype, ggml));
    tensors.push({ name: `${mapping.gguf}.lora_a`, dtype, shape: [m.r, inp], data: encode(a, [m.r, inp]) });
    tensors.push({ name: `${mapping.gguf}.lora_b`, dtype, shape: [outF, m.r], data: encode(b, [outF, m.r]) });
  }
  writeGguf(out, {
    metadata: {
      "general.architecture": { type: "string", value: ggufArchFor(model.config) },
      "general.type": { type: "string", value: "adapter" },
      ...(name ? { "general.name": { type: "string", value: name } } : {}),
      "adapter.type": { type: "string", value: "lora" },
      "adapter.lora.alpha": { type: "f32", value: alpha },
    },
    tensors,
  }, ggml);
  return { path: out, tensors: tensors.length, alpha };
}

/**
 * Reads a llama.cpp GGUF LoRA onto `model` as a tasktune LoraAdapter (PEFT semantics), ready for
 * saveAdapter: lora_b rows un-permuted, ranks per tensor (rank_pattern where they differ), alpha
 * such that PEFT's alpha / r equals llama.cpp's scale. *_norm tensors, which llama.cpp ignores,
 * are ignored too.
 */
export function readLoraGguf(model: Model, path: string, backend: Backend): LoraAdapter {
  const file = openGguf(path, backend);
  try {
    const str = (k: string) => {
      const v = file.metadata.get(k);
      return v?.type === "string" ? v.value : undefined;
    };
    if (str("general.type") !== "adapter" || str("adapter.type") !== "lora") {
      throw new FormatError(path, `is not a LoRA adapter (general.type ${JSON.stringify(str("general.type"))}, adapter.type ${JSON.stringify(str("adapter.type"))})`);
    }
    const arch = ggufArchFor(model.config);
    if (str("general.architecture") !== arch) throw new FormatError(path, `is for architecture ${JSON.stringify(str("general.architecture"))}, the model is ${arch}`);
    const alphaValue = file.metadata.get("adapter.lora.alpha");
    const alpha = alphaValue && alphaValue.type !== "array" && alphaValue.type !== "string" ? Number(alphaValue.value) : 0;

    const byGguf = new Map(tensorMappings(model.config).map((m) => [m.gguf, m]));
    const pairs = new Map<string, { a?: string; b?: string }>();
    for (const name of file.tensors.keys()) {
      const suffix = name.endsWith(".lora_a") ? "a" : name.endsWith(".lora_b") ? "b" : undefined;
      if (!suffix) {
        if (name.endsWith("_norm.weight")) continue;
        throw new FormatError(path, `tensor "${name}" is neither a .lora_a nor a .lora_b`);
      }
      const base = name.slice(0, -".lora_a".length);
      pairs.set(base, { ...pairs.get(base), [suffix]: name });
    }
    const modules: { module: string; mapping: TensorMapping; a: string; b: string; r: number }[] = [];
    for (const [base, { a, b }] of pairs) {
      if (!a || !b) throw new FormatError(path, `LoRA tensor pair for "${base}" is missing its lora_${a ? "b" : "a"}`);
      const mapping = byGguf.get(base);
      if (!mapping || !mapping.hf.endsWith(".weight") || mapping.shape.length !== 2) {
        throw new FormatError(path, `LoRA for "${base}", which is not a linear weight of this ${model.config.modelType} model`);
      }
      const module = mapping.hf.slice(0, -".weight".length);
      if (!model.linearModules.includes(module)) throw new FormatError(path, `LoRA for "${base}" (${module}), which tasktune's adapters cannot target`);
      const { in: inp, out } = model.linearFeatures(module);
      const sa = file.info(a).shape;
      const sb = file.info(b).shape;
      const r = sa[0]!;
      if (sa.length !== 2 || sb.length !== 2 || sa[1] !== inp || sb[0] !== out || sb[1] !== r) {
        throw new FormatError(path, `"${base}": lora_a [${sa.join(", ")}] and lora_b [${sb.join(", ")}] do not fit [r, ${inp}] and [${out}, r]`);
      }
      modules.push({ module, mapping, a, b, r });
    }
    if (modules.length === 0) throw new FormatError(path, "has no LoRA tensors");

    // PEFT: scale = alpha_m / r_m; llama.cpp: alpha / r_m (1 when alpha is 0).
    const ranks = new Map<number, number>();
    for (const m of modules) ranks.set(m.r, (ranks.get(m.r) ?? 0) + 1);
    const r = [...ranks].sort((x, y) => y[1] - x[1])[0]![0];
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    for (const m of modules) {
      if (m.r !== r) rankPattern[m.module] = m.r;
      if (alpha === 0) alphaPattern[m.module] = m.r;
    }
    const loraAlpha = alpha === 0 ? r : alpha;
    if (alpha === 0) for (const m of modules) if (m.r === r) delete alphaPattern[m.module];
    const config = loraConfig({
      r, loraAlpha, targetModules: targetModulesFor(model, modules.map((m) => m.module)), rankPattern, alphaPattern,
      taskType: "CAUSAL_LM",
    });
    const adapter = new LoraAdapter(model, config, { initialize: false });
    const found = new Map(modules.map((m) => [m.module, m]));
    try {
      if (adapter.modules.length !== modules.length || adapter.modules.some((m) => !found.has(m.module))) {
        throw new FormatError(path, "the adapter's target modules cannot be expressed as PEFT target_modules for this model");
      }
      for (const m of adapter.modules) setFromGguf(m, found.get(m.module)!, file.readF32.bind(file));
    } catch (err) {
      adapter.free();
      throw err;
    }
    return adapter;
  } finally {
    file.close();
  }
}

function setFromGguf(m: LoraModule, src: { mapping: TensorMapping; a: string; b: string; r: number }, read: (name: string) => Float32Array): void {
  m.a.setAll(read(src.a));
  const out = m.b.ne[1];
  let b = read(src.b);
  if (src.mapping.layout.kind === "rope-permute") b = fromGgufLayout(b, [out, src.r], src.mapping.layout);
  m.b.setAll(b);
}

/** Short module names (q_proj) when they select exactly these modules, else the full names. */
function targetModulesFor(model: Model, modules: string[]): string[] {
  const short = [...new Set(modules.map((m) => m.split(".").pop()!))].sort();
  const selected = model.linearModules.filter((m) => short.some((s) => m === s || m.endsWith(`.${s}`)));
  const wanted = new Set(modules);
  return selected.length === wanted.size && selected.every((m) => wanted.has(m)) ? short : [...modules].sort();
}
