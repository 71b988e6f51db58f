import path from "node:path";
import { fileURLToPath } from "node:url";
import { trainConfigSchema } from "../../train/config.ts";
import { runTraining } from "../../train/run.ts";
import { parseCommand } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune demo [--out DIR] [--steps N]

Fine-tunes the bundled tiny Llama (models/tiny-llama) with LoRA on binary sentiment (SST-2,
data/sst2), offline on the CPU, and prints task accuracy before and after. The run directory
holds the PEFT adapter, metrics.jsonl and report.html.
  --out DIR     run directory (default runs/demo)
  --steps N     optimizer steps (default 300)`;

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));

export const demoCommand: Command = {
  summary: "LoRA fine-tune of a bundled tiny model on SST-2, offline, in about a minute",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values } = parseCommand(args, { out: { type: "string" }, steps: { type: "string" }, help: { type: "boolean", short: "h" } }, USAGE);
    const steps = Number(values.steps ?? 300);
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got "${values.steps}"`);
    const data = (name: string) => path.join(ROOT, "data", "sst2", name);
    const config = trainConfigSchema.parse({
      model: path.join(ROOT, "models", "tiny-llama"),
      method: "lora",
      lora: { r: 16, alpha: 32, dropout: 0, use_rslora: true },
      data: { train: data("train.jsonl"), eval: data("dev.jsonl") },
      train: { steps, batch_size: 16, seq_len: 96, lr: 3e-3, warmup: 10, eval_every: 100, eval_batches: 4 },
      eval: { file: data("dev.jsonl"), choices: [" negative", " positive"], limit: 500 },
      output_dir: path.resolve(values.out ?? path.join("runs", "demo")),
    });
    const result = await runTraining(config);
    const pct = (x?: number) => (x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`);
    process.stdout.write(`\nSST-2 accuracy (500 dev reviews): before ${pct(result.accuracyBefore)}, after ${pct(result.accuracyAfter)}\n` +
      `adapter: ${path.join(result.outputDir, "adapter")}\nreport:  ${result.reportFile}\n`);
  },
};
