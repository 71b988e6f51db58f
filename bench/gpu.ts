// GPU training step timings for issue 8's llama-1b shape (hidden 2048, 16 layers, 32 heads, 8 KV
// heads, SwiGLU 8192, vocab 128256, seq 1024, batch 8): LoRA r16 on all projections over a frozen
// base of each dtype, and full fine-tuning in f32. Weights stay zero (timing does not depend on
// values). Prints one JSON line per configuration, or the error that stopped it.
// Usage: TASKTUNE_GGML_DIR=<ggml build with CUDA> node --import tsx bench/gpu.ts [seq] [batch] [layers]
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { Backend } from "../src/engine/backend.ts";
import { seededUniform } from "../src/engine/random.ts";
import type { DType } from "../src/engine/tensor.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { createModel } from "../src/models/index.ts";
import { Trainer, TRAIN_DEFAULTS, type BatchSource } from "../src/train/trainer.ts";

const [seqArg = "1024", batchArg = "8", layersArg = "16"] = process.argv.slice(2);
const S = Number(seqArg);
const B = Number(batchArg);
const config = parseConfig({
  model_type: "llama", hidden_size: 2048, num_hidden_layers: Number(layersArg), num_attention_heads: 32, num_key_value_heads: 8,
  intermediate_size: 8192, vocab_size: 128256, hidden_act: "silu", rms_norm_eps: 1e-5, rope_theta: 500000,
  max_position_embeddings: 8192, tie_word_embeddings: true,
}, "llama-1b shape");
const backend = await Backend.open({ device: (process.env.TASKTUNE_DEVICE as "cuda") ?? "cuda" });
process.stdout.write(`${JSON.stringify({ device: backend.device })}\n`);
const data: BatchSource = {
  batchAt(i) {
    const random = seededUniform(i);
    const ids = Int32Array.from({ length: B * S }, () => Math.floor(random() * 128256));
    return { batch: { batchSize: B, seqLen: S, inputIds: ids }, labels: ids, tokens: B * S };
  },
};

const runs: { name: string; method: "lora" | "full"; dtype: DType }[] = [
  { name: "lora16-f16-base", method: "lora", dtype: "f16" },
  { name: "lora16-bf16-base", method: "lora", dtype: "bf16" },
  { name: "lora16-f32-base", method: "lora", dtype: "f32" },
  { name: "full-f32", method: "full", dtype: "f32" },
];
for (const run of runs) {
  const t0 = performance.now();
  try {
    const model = createModel(backend, config, run.dtype);
    const adapter = run.method === "lora" ? new LoraAdapter(model, loraConfig({
      r: 16, loraAlpha: 32, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }), { seed: 0 }) : undefined;
    const params = adapter ? adapter.stateDict.map(([name, tensor]) => ({ name, tensor })) : model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
    const trainer = new Trainer(model, params, { ...TRAIN_DEFAULTS, steps: 6, batchSize: B, seqLen: S, lr: 1e-4 }, adapter);
    const built = performance.now();
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const s = performance.now();
      trainer.trainStep(data, s);
      times.push(performance.now() - s);
    }
    const timed = times.slice(2).sort((a, b) => a - b);
    const stepMs = timed[Math.floor(timed.length / 2)];
    process.stdout.write(`${JSON.stringify({ name: run.name, tokens_per_s: Math.round((B * S * 1000) / stepMs), step_ms: Math.round(stepMs), first_step_ms: Math.round(times[0]), build_s: Number(((built - t0) / 1000).toFixed(1)), free_gpu_gb: Number((backend.device.freeBytes / 2 ** 30).toFixed(1)) })}\n`);
    trainer.free();
    adapter?.free();
    model.free();
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ name: run.name, error: (err as Error).message.slice(0, 600) })}\n`);
  }
}
