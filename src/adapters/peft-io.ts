// Adapters in PEFT's on-disk layout: adapter_config.json + adapter_model.safetensors with keys
// like base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
import fs from "node:fs";
import path from "node:path";
import { FormatError } from "../io/errors.ts";
import { writeFileAtomic } from "../io/files.ts";
import { openCheckpoint, writeSafetensors } from "../io/safetensors.ts";
import type { Model } from "../models/model.ts";
import { LoraAdapter } from "./lora.ts";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, loraConfigJson, readLoraConfig } from "./peft-config.ts";

/** Writes the adapter so that peft.PeftModel.from_pretrained loads it unchanged (atomic per file). */
export function saveAdapter(adapter: LoraAdapter, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), adapter.stateDict.map(([name, t]) => ({
    name, dtype: "F32" as const, shape: t.torchShape, data: t.getF32(),
  })), { format: "pt" });
  writeFileAtomic(path.join(dir, ADAPTER_CONFIG), `${JSON.stringify(loraConfigJson(adapter.config), null, 2)}\n`);
}

/**
 * Loads a PEFT LoRA/DoRA adapter onto a model. Every mismatch between the adapter's tensors and
 * what its config implies for this model is an error that lists the offending keys.
 */
export function loadAdapter(model: Model, dir: string): LoraAdapter {
  const config = readLoraConfig(dir);
  const adapter = new LoraAdapter(model, config, { initialize: false });
  const file = path.join(dir, ADAPTER_WEIGHTS);
  const checkpoint = openCheckpoint(dir, ADAPTER_WEIGHTS);
  try {
    const expected = new Map(adapter.stateDict);
    // With bias "all", PEFT also saves the bias of a modules_to_save module's two inner copies.
    const available = new Set([...checkpoint.tensors.keys()].filter((k) => !/\.(original_module|modules_to_save)\./.test(k)));
    const missing = [...expected.keys()].filter((k) => !available.has(k));
    const unexpected = [...available].filter((k) => !expected.has(k));
    const problems: string[] = [];
    if (missing.length) problems.push(`missing keys (the config targets these modules): ${missing.join(", ")}`);
    if (unexpected.length) problems.push(`unexpected keys (no such module is targeted in this model): ${unexpected.join(", ")}`);
    const shapes = [...expected].filter(([k, t]) => available.has(k) && checkpoint.info(k).shape.join() !== t.torchShape.join())
      .map(([k, t]) => `${k} is [${checkpoint.info(k).shape.join(", ")}], expected [${t.torchShape.join(", ")}]`);
    if (shapes.length) problems.push(`shape mismatches (rank or base model differ): ${shapes.join("; ")}`);
    if (problems.length) {
      adapter.free();
      throw new FormatError(file, problems.join("\n"));
    }
    for (const [key, tensor] of expected) tensor.setAll(checkpoint.readF32(key));
  } finally {
    checkpoint.close();
  }
  adapter.refreshDoraNorms();
  return adapter;
}
