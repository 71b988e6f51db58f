import { loadTrainConfig } from "../../train/config.ts";
import { runTraining } from "../../train/run.ts";
import { parseCommand } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune train <config.yaml> [--set key=value ...] [--resume]

Fine-tunes a model as the YAML config says (method full, lora or dora); the run directory ends
with adapter/ (PEFT format) or model/ (Hugging Face format), metrics.jsonl and report.html.
  --set key=value   override a config key, e.g. --set train.lr=1e-4 --set lora.r=16
  --resume          continue from the newest checkpoint in output_dir/checkpoints`;

export const trainCommand: Command = {
  summary: "fine-tune a model (full, LoRA, DoRA) from a YAML config",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values, positionals } = parseCommand(args, {
      set: { type: "string", multiple: true }, resume: { type: "boolean" }, help: { type: "boolean", short: "h" },
    }, USAGE, true);
    if (positionals.length !== 1) throw new Error(`train takes one config file\n\n${USAGE}`);
    const config = loadTrainConfig(positionals[0], values.set ?? []);
    const result = await runTraining(config, { resume: values.resume });
    process.stdout.write(`final loss ${result.finalLoss.toFixed(4)}; report: ${result.reportFile}\n`);
  },
};
