import { loadMergeConfig } from "../../merge/config.ts";
import { mergeAdapters } from "../../merge/adapter-merge.ts";
import { mergeModels } from "../../merge/model-merge.ts";
import { formatBytes, progressPrinter } from "../../merge/progress.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, openBackend, parseCommand, requireOption, parseSize } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune merge <merge.yaml> --out <dir> [--force] [--random-seed N] [--max-shard-size SIZE]

Merges models (mergekit's YAML: merge_method, base_model, models: [{model, parameters}],
parameters, dtype) one tensor at a time into a sharded Hugging Face checkpoint, or merges PEFT
LoRA adapters (merge_method: a combination_type of add_weighted_adapter, base_model,
adapters: [{adapter, weight}], parameters: {density, svd_rank}) into a new adapter.
Model methods: linear, task_arithmetic, ties, dare_linear, dare_ties, magnitude_prune,
breadcrumbs, breadcrumbs_ties, slerp, model_stock, lines. See examples/merge-*.yaml.
  --out DIR              output folder, written atomically (a temporary sibling renamed at the end)
  --force                replace --out if it exists and is not empty
  --random-seed N        seed of the random drops of dare_* (default 0)
  --max-shard-size SIZE  bytes per output shard, e.g. 2GB or 500MB (default 5GB)
${DEVICE_USAGE}`;

export const mergeCommand: Command = {
  summary: "merge models (task arithmetic, TIES, DARE, SLERP, ...) or PEFT adapters from a YAML config",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values, positionals } = parseCommand(args, {
      ...DEVICE_OPTIONS, out: { type: "string" }, force: { type: "boolean" }, "random-seed": { type: "string" },
      "max-shard-size": { type: "string" },
    }, USAGE, true);
    if (positionals.length !== 1) throw new Error(`merge takes one config file\n\n${USAGE}`);
    const out = requireOption(values, "out", USAGE);
    const seed = values["random-seed"] === undefined ? undefined : Number(values["random-seed"]);
    if (seed !== undefined && !Number.isInteger(seed)) throw new Error(`--random-seed must be an integer, got "${values["random-seed"]}"`);
    const maxShardBytes = values["max-shard-size"] === undefined ? undefined : parseSize(values["max-shard-size"]);
    const config = loadMergeConfig(positionals[0]!);
    const backend = await openBackend(values);
    try {
      if (config.kind === "adapter") {
        const result = mergeAdapters(config, out, { backend, seed, overwrite: values.force });
        process.stdout.write(`merged ${config.adapters.length} adapters (${result.combinationType}, r=${result.rank}, ${result.modules} modules) into ${result.outDir}\n`);
      } else {
        const result = mergeModels(config, out, { backend, seed, maxShardBytes, overwrite: values.force, onProgress: progressPrinter() });
        process.stdout.write(`merged ${result.tensors} tensors (${formatBytes(result.bytesWritten)}) in ${result.seconds.toFixed(1)} s into ${result.outDir}\n`);
      }
    } finally {
      backend.close();
    }
  },
};
