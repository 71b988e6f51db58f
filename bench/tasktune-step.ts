// Times training steps of one bench configuration with tasktune; prints one JSON line.
// Runs in its own process so that peak RSS belongs to this configuration alone.
import type { Backend } from "../src/engine/backend.ts";
import { benchConfig, benchTrainer } from "./setup.ts";

function deviceUsedGb(backend: Backend): number {
  const { freeBytes, totalBytes } = backend.memory();
  return Number(((totalBytes - freeBytes) / 2 ** 30).toFixed(2));
}

const config = benchConfig(process.argv[2]);
const { batchSize: B, seqLen: S } = config;
const steps = config.warmupSteps + config.timedSteps;
const { backend, params, data, trainer } = await benchTrainer(config, steps);
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
  name: config.name, backend: backend.label, tokens_per_s: Math.round((B * S * 1000) / stepMs), step_ms: Number(stepMs.toFixed(1)),
  peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024), trainable_params: params.reduce((n, p) => n + p.tensor.elements, 0),
  // Device memory in use after the timed steps: weights, optimizer state and the graph's buffer.
  ...(config.device ? { device: backend.device.description, device_used_gb: deviceUsedGb(backend) } : {}),
})}\n`);
