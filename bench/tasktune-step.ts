// Times training steps of one bench configuration with tasktune; prints one JSON line.
// Runs in its own process so that peak RSS belongs to this configuration alone.
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { Backend } from "../src/engine/backend.ts";
import { seededUniform } from "../src/engine/random.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { createModel } from "../src/models/index.ts";
import { Trainer, TRAIN_DEFAULTS, type BatchSource } from "../src/train/trainer.ts";
import { BENCH_CONFIGS } from "./configs.ts";

const config = BENCH_CONFIGS.find((c) => c.name === process.argv[2]);
if (!config) throw new Error(`unknown bench config ${process.argv[2]}`);
const { batchSize: B, seqLen: S } = config;
const backend = await Backend.open({ device: "cpu", threads: config.threads });
const model = createModel(backend, parseConfig({
  model_type: "llama", hidden_act: "silu", rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 2048, ...config.model,
}, config.name));
model.initialize(0);
const adapter = config.method === "lora" ? new LoraAdapter(model, loraConfig({
  r: config.loraRank!, loraAlpha: 2 * config.loraRank!, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}), { seed: 0 }) : undefined;
const params = adapter ? adapter.stateDict.map(([name, tensor]) => ({ name, tensor })) : model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
const data: BatchSource = {
  batchAt(i) {
    const random = seededUniform(i);
    const ids = Int32Array.from({ length: B * S }, () => Math.floor(random() * config.model.vocab_size));
    return { batch: { batchSize: B, seqLen: S, inputIds: ids }, labels: ids, tokens: B * S };
  },
};
const steps = config.warmupSteps + config.timedSteps;
const trainer = new Trainer(model, params, { ...TRAIN_DEFAULTS, steps, batchSize: B, seqLen: S, lr: 1e-4 }, adapter);
const times: number[] = [];
const started = performance.now();
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  trainer.trainStep(data, started);
  if (i >= config.warmupSteps) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const stepMs = times[Math.floor(times.length / 2)];
process.stdout.write(`${JSON.stringify({
  name: config.name, tokens_per_s: Math.round((B * S * 1000) / stepMs), step_ms: Number(stepMs.toFixed(1)),
  peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024), trainable_params: params.reduce((n, p) => n + p.tensor.elements, 0),
})}\n`);
