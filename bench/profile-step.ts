// Where a training step of a bench configuration spends its time: the whole step, the
// forward+backward graph alone, and that graph's time per op type (Graph.profile).
// Usage: node --import tsx bench/profile-step.ts <config name> [--threads N] [--json]
// (one thread gives steadier numbers on a shared machine: no spinning between workers)
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { Backend } from "../src/engine/backend.ts";
import type { Graph } from "../src/engine/graph.ts";
import { seededUniform } from "../src/engine/random.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { createModel } from "../src/models/index.ts";
import type { HostArray, Tensor } from "../src/engine/tensor.ts";
import { Trainer, TRAIN_DEFAULTS, type BatchSource, type LabeledBatch } from "../src/train/trainer.ts";
import { BENCH_CONFIGS } from "./configs.ts";

const config = BENCH_CONFIGS.find((c) => c.name === process.argv[2]);
if (!config) throw new Error(`unknown bench config ${process.argv[2]} (one of ${BENCH_CONFIGS.map((c) => c.name).join(", ")})`);
const { batchSize: B, seqLen: S } = config;
const threadsAt = process.argv.indexOf("--threads");
const threads = threadsAt > 0 ? Number(process.argv[threadsAt + 1]) : config.threads;
const backend = await Backend.open({ device: "cpu", threads });
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
const trainer = new Trainer(model, params, { ...TRAIN_DEFAULTS, steps: 100, batchSize: B, seqLen: S, lr: 1e-4 }, adapter);
const { graph, inputs } = trainer as unknown as { graph: Graph; inputs: [Tensor, (b: LabeledBatch) => HostArray][] };
const setInputs = () => {
  for (const [t, fill] of inputs) t.setAll(fill(data.batchAt(0)));
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const started = performance.now();
const steps: number[] = [];
const computes: number[] = [];
const n = config.warmupSteps + config.timedSteps;
for (let i = 0; i < n; i++) {
  let t0 = performance.now();
  trainer.trainStep(data, started);
  if (i >= config.warmupSteps) steps.push(performance.now() - t0);
  setInputs();
  t0 = performance.now();
  graph.compute();
  if (i >= config.warmupSteps) computes.push(performance.now() - t0);
}
const profile = [...graph.profile(3, setInputs)].sort((a, b) => b[1].ms - a[1].ms);
const total = profile.reduce((s, [, v]) => s + v.ms, 0);
const byOp = new Map<string, number>();
for (const [key, v] of profile) byOp.set(key.split(" ")[0], (byOp.get(key.split(" ")[0]) ?? 0) + v.ms);
const summary = {
  name: config.name, threads, step_ms: Number(median(steps).toFixed(1)), graph_compute_ms: Number(median(computes).toFixed(1)),
  nodes: graph.nodes.length, profiled_ms: Number(total.toFixed(1)),
  by_op: Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1]).map(([k, ms]) => [k, Number(ms.toFixed(1))])),
};
if (process.argv.includes("--json")) {
  process.stdout.write(`${JSON.stringify({ ...summary, detail: Object.fromEntries(profile.map(([k, v]) => [k, { ms: Number(v.ms.toFixed(2)), count: v.count }])) })}\n`);
} else {
  process.stdout.write(`${config.name}, ${threads} threads: step ${summary.step_ms} ms, forward+backward graph ${summary.graph_compute_ms} ms (${summary.nodes} nodes), ` +
    `per-node sum ${summary.profiled_ms} ms\n`);
  for (const [op, ms] of byOp) process.stdout.write(`  ${op.padEnd(24)} ${ms.toFixed(1).padStart(8)} ms  ${(100 * ms / total).toFixed(1).padStart(5)}%\n`);
  process.stdout.write("detail (top 30):\n");
  for (const [key, v] of profile.slice(0, 30)) process.stdout.write(`  ${key.padEnd(48)} ${v.ms.toFixed(2).padStart(8)} ms  x${v.count}\n`);
}
trainer.free();
adapter?.free();
model.free();
