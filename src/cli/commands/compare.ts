import path from "node:path";
import type { DeviceChoice } from "../../engine/backend.ts";
import { formatComparison, loadSuite, runComparison } from "../../train/compare.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, openBackend, parseCommand } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune compare <suite.yaml> [--device ...] [--threads N]

Trains every method of a suite (full, LoRA, DoRA, ...) on the same data with the same budget, once
per seed, each run in its own process; scores the base and every tuned model on the same items of
the target task and the held-out tasks; and prints the learning-forgetting table: target gain,
mean held-out drop (forgetting), trainable parameters, wall time and peak RSS, as each method's
mean and spread over the seeds. output_dir receives runs/<method>-seed<seed>/, compare.json and
report.html. Runs finished there earlier are kept, so a rerun resumes an interrupted comparison.
See examples/compare-demo.yaml.
${DEVICE_USAGE}
  (--device and --threads apply to the evaluation and, when given, to every training run)`;

export const compareCommand: Command = {
  summary: "train several methods with the same seeds and budget: learning-forgetting table and report",
  usage: USAGE,
  native: true,
  async run(args) {
    // No default device: training runs keep their config's device unless one is asked for.
    const { values, positionals } = parseCommand(args, { ...DEVICE_OPTIONS, device: { type: "string" } }, USAGE, true);
    if (positionals.length !== 1) throw new Error(`compare takes one suite file\n\n${USAGE}`);
    const suite = loadSuite(positionals[0]);
    const backend = await openBackend(values);
    try {
      const comparison = await runComparison(suite, {
        backend,
        device: values.device === undefined ? undefined : (values.device as DeviceChoice),
        threads: values.threads === undefined ? undefined : backend.threadCount,
        log: (message) => process.stderr.write(`${message}\n`),
      });
      process.stdout.write(`\n${formatComparison(comparison)}\nresults: ${path.join(suite.outputDir, "compare.json")}\nreport:  ${path.join(suite.outputDir, "report.html")}\n`);
    } finally {
      backend.close();
    }
  },
};
