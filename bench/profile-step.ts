// Where a training step of a bench configuration spends its time: the whole step, the
// forward+backward graph alone, and that graph's time per op type (Graph.profile).
// Usage: node --import tsx bench/profile-step.ts <config name> [--threads N] [--json]
// (one thread gives steadier numbers on a shared machine: no spinning between workers)
import type { Graph } from "../src/engine/graph.ts";
import type { HostArray, Tensor } from "../src/engine/tensor.ts";
import type { LabeledBatch } from "../src/train/trainer.ts";
import { benchConfig, benchTrainer } from "./setup.ts";

const config = benchConfig(process.argv[2]);
const threadsAt = process.argv.indexOf("--threads");
const threads = threadsAt > 0 ? Number(process.argv[threadsAt + 1]) : config.threads;
const { model, adapter, data, trainer } = await benchTrainer(config, 100, threads);
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
