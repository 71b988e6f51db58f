// Forgetting (METHODS.md E1): a base and a tuned model scored on the same tasks with the same
// prompts and seeds; the gain on the target task and the drop on the held-out ones, as tables for
// the terminal and for the HTML report. The training run can call evaluateTasks before and after
// training and pass both to compareResults.
import { existsSync } from "node:fs";
import path from "node:path";
import { loadAdapter } from "../adapters/peft-io.ts";
import type { Backend } from "../engine/backend.ts";
import { isGgufPath, loadTokenizerFor } from "../models/gguf-loader.ts";
import { loadModel } from "../models/index.ts";
import type { Model } from "../models/model.ts";
import { writeReport, type ReportTable } from "../report/index.ts";
import { alignTable, evaluateTasks, formatValue, isAdapterDir, modelMaxLength, type EvalOptions, type EvalResults, type TaskResult } from "./run.ts";
import type { TaskConfig } from "./tasks/config.ts";

export interface ForgettingRow {
  task: string;
  metric: string;
  role: "target" | "held-out";
  base: number;
  tuned: number;
  baseStderr: number | null;
  tunedStderr: number | null;
  /** tuned − base. */
  delta: number;
  /** delta signed so that positive is an improvement (−delta for perplexity-like metrics). */
  improvement: number;
  higherIsBetter: boolean;
  n: number;
}

export interface ForgettingReport {
  /** The task the model was tuned for; the others are held out. */
  target?: string;
  /** Every task × metric. */
  rows: ForgettingRow[];
  /** Improvement on the target task's first metric. */
  targetGain?: number;
  /** Mean drop (−improvement) of the held-out tasks' first metrics: positive means forgetting. */
  meanDrop?: number;
  /** The held-out task that dropped most, by its first metric. */
  worstDrop?: { task: string; metric: string; drop: number };
  base: EvalResults;
  tuned: EvalResults;
}

/**
 * Compares two evaluations of the same tasks. They must have been run with the same items and
 * demonstrations (same task files, limit, few-shot count and seed), or differences would not be
 * the models'.
 */
export function compareResults(base: EvalResults, tuned: EvalResults, options: { target?: string } = {}): ForgettingReport {
  const tunedByTask = new Map(tuned.tasks.map((t) => [t.task, t]));
  if (options.target !== undefined && !base.tasks.some((t) => t.task === options.target)) {
    throw new Error(`--target ${options.target} is not one of the evaluated tasks (${base.tasks.map((t) => t.task).join(", ")})`);
  }
  const extra = tuned.tasks.filter((t) => !base.tasks.some((b) => b.task === t.task));
  if (extra.length) throw new Error(`task ${extra[0].task} was evaluated for the tuned model only`);
  const rows: ForgettingRow[] = [];
  const primary = new Map<string, ForgettingRow>();
  for (const b of base.tasks) {
    const t = tunedByTask.get(b.task);
    if (!t) throw new Error(`task ${b.task} was evaluated for the base model only`);
    if (t.n !== b.n || t.fewshot !== b.fewshot || t.fewshotSeed !== b.fewshotSeed) {
      throw new Error(`task ${b.task}: base and tuned were evaluated differently (n ${b.n}/${t.n}, ${b.fewshot}/${t.fewshot}-shot, seed ${b.fewshotSeed}/${t.fewshotSeed})`);
    }
    for (const [metric, bm] of Object.entries(b.metrics)) {
      const tm = t.metrics[metric];
      if (!tm) throw new Error(`task ${b.task}: metric ${metric} is missing from the tuned results`);
      const delta = tm.value - bm.value;
      const row: ForgettingRow = {
        task: b.task, metric, role: b.task === options.target ? "target" : "held-out",
        base: bm.value, tuned: tm.value, baseStderr: bm.stderr, tunedStderr: tm.stderr,
        delta, improvement: bm.higherIsBetter ? delta : -delta, higherIsBetter: bm.higherIsBetter, n: b.n,
      };
      rows.push(row);
      if (!primary.has(b.task)) primary.set(b.task, row);
    }
  }
  const heldOut = [...primary.values()].filter((r) => r.role === "held-out");
  const worst = heldOut.reduce<ForgettingRow | undefined>((w, r) => (!w || r.improvement < w.improvement ? r : w), undefined);
  return {
    target: options.target,
    rows,
    targetGain: options.target === undefined ? undefined : primary.get(options.target)!.improvement,
    meanDrop: heldOut.length ? -heldOut.reduce((a, r) => a + r.improvement, 0) / heldOut.length : undefined,
    worstDrop: worst && { task: worst.task, metric: worst.metric, drop: -worst.improvement },
    base,
    tuned,
  };
}

/** The comparison (task, role, metric, base, tuned, change) and each model's own results. */
export function forgettingTables(report: ForgettingReport): ReportTable[] {
  return [
    {
      title: report.target ? `Forgetting: gain on ${report.target}, change on held-out tasks` : "Base vs tuned",
      columns: ["task", "role", "metric", "base", "tuned", "change (tuned − base)", "n"],
      rows: report.rows.map((r) => [r.task, r.role, r.metric, r.base, r.tuned, r.delta, r.n]),
    },
    resultsTable(`Base: ${describe(report.base)}`, report.base.tasks),
    resultsTable(`Tuned: ${describe(report.tuned)}`, report.tuned.tasks),
  ];
}

function resultsTable(title: string, tasks: readonly TaskResult[]): ReportTable {
  return {
    title,
    columns: ["task", "metric", "value", "stderr", "n", "shots"],
    rows: tasks.flatMap((t) => Object.entries(t.metrics).map(([metric, m]) => [t.task, metric, m.value, m.stderr, t.n, t.fewshot])),
  };
}

function describe(results: EvalResults): string {
  return results.adapter ? `${results.model} + adapter ${results.adapter}` : results.model;
}

/** Headline sentences: gain on the target, mean and worst drop on held-out tasks. */
export function forgettingSummary(report: ForgettingReport): string[] {
  const lines: string[] = [];
  const signed = (x: number) => `${x >= 0 ? "+" : ""}${formatValue(x)}`;
  if (report.target !== undefined) {
    const row = report.rows.find((r) => r.task === report.target)!;
    lines.push(`target ${report.target} (${row.metric}): ${formatValue(row.base)} → ${formatValue(row.tuned)}, gain ${signed(report.targetGain!)}`);
  }
  if (report.meanDrop !== undefined) {
    const worst = report.worstDrop;
    lines.push(`held-out tasks: mean drop ${signed(report.meanDrop)} (positive = forgetting); ` +
      (worst && worst.drop > 0 ? `largest drop on ${worst.task} (${worst.metric}) ${signed(worst.drop)}` : "none dropped"));
  }
  return lines;
}

/** A plain-text comparison table for the terminal. */
export function formatForgettingTable(report: ForgettingReport): string {
  const rows = [["task", "role", "metric", "base", "tuned", "change", "n"]];
  for (const r of report.rows) {
    rows.push([r.task, r.role, r.metric, formatValue(r.base), formatValue(r.tuned), `${r.delta >= 0 ? "+" : ""}${formatValue(r.delta)}`, String(r.n)]);
  }
  return alignTable(rows);
}

/** report.html with the comparison and both models' tables (no training curves: metrics are empty). */
export function writeForgettingReport(file: string, report: ForgettingReport, config: Record<string, unknown> = {}): void {
  writeReport(file, {
    title: `tasktune forgetting: ${report.tuned.adapter ?? report.tuned.model} vs ${report.base.model}`,
    config: { base: describe(report.base), tuned: describe(report.tuned), target: report.target ?? null, ...config },
    metrics: [],
    tables: forgettingTables(report),
    notes: [
      ...forgettingSummary(report),
      "Both models were scored on the same items with the same prompts and few-shot demonstrations (same seed).",
    ],
  });
}

export interface ForgettingRun {
  base: string;
  /** A model folder or .gguf file (as is `base`), or a PEFT adapter folder applied on the base. */
  tuned: string;
  tasks: readonly TaskConfig[];
  target?: string;
  options?: EvalOptions;
}

/** Evaluates base and tuned on the same tasks and compares them. */
export function evaluateForgetting(backend: Backend, run: ForgettingRun): ForgettingReport {
  const options = run.options ?? {};
  const log = options.log ?? (() => {});
  const baseTokenizer = loadTokenizerFor(run.base, backend);
  let model: Model | undefined = loadModel(backend, run.base);
  let base: EvalResults;
  let tuned: EvalResults;
  try {
    log(`base: ${run.base}`);
    base = { model: run.base, maxLength: maxLengthOf(model, options), tasks: evaluateTasks(model, baseTokenizer, run.tasks, options) };
    if (isAdapterDir(run.tuned)) {
      log(`tuned: ${run.base} + adapter ${run.tuned}`);
      const adapter = loadAdapter(model, run.tuned);
      try {
        tuned = { model: run.base, adapter: run.tuned, maxLength: base.maxLength, tasks: evaluateTasks(model, baseTokenizer, run.tasks, options) };
      } finally {
        adapter.free();
      }
    } else {
      model.free();
      model = undefined;
      log(`tuned: ${run.tuned}`);
      model = loadModel(backend, run.tuned);
      // A fine-tuned folder may come without tokenizer files: it shares the base's vocabulary.
      const tokenizer = isGgufPath(run.tuned) || existsSync(path.join(run.tuned, "tokenizer.json")) ? loadTokenizerFor(run.tuned, backend) : baseTokenizer;
      tuned = { model: run.tuned, maxLength: maxLengthOf(model, options), tasks: evaluateTasks(model, tokenizer, run.tasks, options) };
    }
  } finally {
    model?.free();
  }
  return compareResults(base, tuned, { target: run.target });
}

function maxLengthOf(model: Model, options: EvalOptions): number {
  return Math.min(options.maxLength ?? Infinity, modelMaxLength(model));
}
