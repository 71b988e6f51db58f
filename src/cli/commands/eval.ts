import fs from "node:fs";
import path from "node:path";
import { evaluateForgetting, forgettingSummary, formatForgettingTable, writeForgettingReport } from "../../eval/forgetting.ts";
import { evaluateCheckpoint, formatResultsTable, type EvalOptions } from "../../eval/run.ts";
import { builtinTaskNames, resolveTasks } from "../../eval/tasks/config.ts";
import { writeFileAtomic } from "../../io/files.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, integerOption, openBackend, parseCommand, requireOption } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune eval --model <dir> [--adapter <dir>] --tasks <t1,t2|file.yaml> [options]
       tasktune eval --compare <base> <tuned> --tasks <...> [--target <task>] [options]

Scores a model on tasks (multiple choice by log-likelihood, generation with stop strings) and
prints a table of metrics with standard errors; --out writes them as JSON. With --compare, scores a
base and a tuned model (a model folder, or a PEFT adapter folder applied on the base) with the same
prompts and seeds, reports the gain on the --target task and the drop on the others (forgetting),
and writes report.html.
  --model DIR           Hugging Face checkpoint folder (config.json + safetensors + tokenizer.json)
  --adapter DIR         apply a PEFT LoRA/DoRA adapter
  --tasks LIST          comma-separated built-in tasks (${builtinTaskNames().join(", ")}) and task .yaml files
  --fewshot K           demonstrations per item for every task (default: each task's fewshot.k)
  --limit N             items per task (default: each task's limit, else all)
  --seed S              few-shot seed for every task (default: each task's fewshot.seed)
  --batch-size N        sequences per forward pass (default 16)
  --max-length N        cap on prompt + answer tokens (default: the model's maximum positions)
  --out FILE            write the results as JSON (with --compare: base, tuned and the comparison)
  --log-samples         include every item's prompt, prediction and scores in the JSON
  --compare BASE TUNED  compare two models (forgetting, METHODS.md E1)
  --target TASK         with --compare: the task the model was tuned for; the others are held out
  --report FILE         with --compare: where to write the HTML report (default report.html)
${DEVICE_USAGE}`;

export const evalCommand: Command = {
  summary: "score a model (or base vs tuned: forgetting) on tasks: accuracy, exact match, F1, ROUGE-L",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values, positionals } = parseCommand(args, {
      ...DEVICE_OPTIONS,
      model: { type: "string" }, adapter: { type: "string" }, tasks: { type: "string" },
      fewshot: { type: "string" }, limit: { type: "string" }, seed: { type: "string" },
      "batch-size": { type: "string" }, "max-length": { type: "string" },
      out: { type: "string" }, "log-samples": { type: "boolean" },
      compare: { type: "string" }, target: { type: "string" }, report: { type: "string" },
    }, USAGE, true);
    const tasks = resolveTasks(requireOption(values, "tasks", USAGE));
    const options: EvalOptions = {
      fewshot: integerOption(values, "fewshot", 0),
      limit: integerOption(values, "limit", 1),
      seed: integerOption(values, "seed", -(2 ** 31)),
      batchSize: integerOption(values, "batch-size", 1),
      maxLength: integerOption(values, "max-length", 2),
      logSamples: values["log-samples"],
      log: (message) => process.stderr.write(`${message}\n`),
    };
    const writeJson = (file: string, value: unknown) => {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
    };

    if (values.compare !== undefined) {
      if (positionals.length !== 1) throw new Error(`--compare takes two folders: --compare <base> <tuned>\n\n${USAGE}`);
      if (values.model || values.adapter) throw new Error(`--compare names both models; leave out --model and --adapter\n\n${USAGE}`);
      const backend = await openBackend(values);
      try {
        const report = evaluateForgetting(backend, { base: values.compare, tuned: positionals[0], tasks, target: values.target, options });
        process.stdout.write(formatForgettingTable(report));
        for (const line of forgettingSummary(report)) process.stdout.write(`${line}\n`);
        const reportFile = values.report ?? "report.html";
        fs.mkdirSync(path.dirname(path.resolve(reportFile)), { recursive: true });
        writeForgettingReport(reportFile, report, { tasks: tasks.map((t) => t.file), fewshot: options.fewshot ?? null, limit: options.limit ?? null, seed: options.seed ?? null });
        process.stdout.write(`report: ${reportFile}\n`);
        if (values.out) {
          writeJson(values.out, report);
          process.stdout.write(`results: ${values.out}\n`);
        }
      } finally {
        backend.close();
      }
      return;
    }

    if (positionals.length) throw new Error(`unexpected argument "${positionals[0]}"\n\n${USAGE}`);
    if (values.target || values.report) throw new Error(`--target and --report go with --compare\n\n${USAGE}`);
    const model = requireOption(values, "model", USAGE);
    const backend = await openBackend(values);
    try {
      const results = evaluateCheckpoint(backend, { model, adapter: values.adapter }, tasks, options);
      process.stdout.write(formatResultsTable(results.tasks));
      for (const t of results.tasks) {
        const notes = [
          ...(t.fewshotReduced ? [`${t.fewshotReduced} items got fewer than ${t.fewshot} demonstrations (${t.meanShots.toFixed(2)} on average)`] : []),
          ...(t.truncated ? [`${t.truncated} items were cut (${t.outputType === "generate_until" ? "prompt or generation budget" : "prompt, from the left"})`] : []),
        ];
        if (notes.length) process.stdout.write(`${t.task}: to fit ${results.maxLength} tokens, ${notes.join(" and ")}\n`);
      }
      if (values.out) {
        writeJson(values.out, results);
        process.stdout.write(`results: ${values.out}\n`);
      }
    } finally {
      backend.close();
    }
  },
};
