// `tasktune compare` (METHODS.md E1): the learning-forgetting table of several fine-tuning methods.
// Every method of a suite trains on the same data with the same budget once per seed, each run in
// its own process so that its wall time and peak memory are its own; the base and every tuned model
// are then scored on the same items of the target task and the held-out tasks. Finished runs stay in
// output_dir, so a crashed comparison resumes where it stopped.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";
import { z } from "zod";
import type { Backend } from "../engine/backend.ts";
import { runSupervised } from "../engine/worker.ts";
import { compareResults } from "../eval/forgetting.ts";
import { alignTable, evaluateCheckpoint, formatValue, type EvalResults } from "../eval/run.ts";
import { resolveTasks, type TaskConfig } from "../eval/tasks/config.ts";
import { FormatError } from "../io/errors.ts";
import { readJsonFile, readYamlFile, writeFileAtomic } from "../io/files.ts";
import { writeReport, type ReportTable } from "../report/index.ts";
import { parseTrainConfig, type TrainConfig } from "./config.ts";
import { SUMMARY_FILE, type RunSummary } from "./run.ts";

const BIN = fileURLToPath(new URL("../../bin/tasktune.js", import.meta.url));

/** A run's (or, in output_dir, the base's) scores, with what they were computed from. */
const EVAL_FILE = "eval.json";

const mapping = z.record(z.string(), z.unknown());

const suiteSchema = z.strictObject({
  /** The model every method starts from (a Hugging Face folder or a .gguf file). */
  base: z.string().min(1),
  /** Train-config keys (src/train/config.ts) every method shares. */
  train: mapping.default({}),
  /** A name (its runs' folder names) plus train-config keys merged over `train`. */
  methods: z.array(z.looseObject({ name: z.string().regex(/^[A-Za-z0-9_.-]+$/, "letters, digits and _ . - only") })).min(1),
  /** Each method trains once per seed (as train.seed). */
  seeds: z.array(z.number().int()).min(1).default([42]),
  eval: z.strictObject({
    /** The task the methods tune for: a built-in task name or a task .yaml file. */
    target: z.string().min(1),
    /** Tasks whose drop measures forgetting. */
    held_out: z.array(z.string().min(1)).default([]),
    /** Items per task, the same ones for every model. */
    limit: z.number().int().positive().optional(),
    /** Demonstrations per item for every task (default: each task's own). */
    fewshot: z.number().int().nonnegative().optional(),
  }),
  output_dir: z.string().min(1),
}).superRefine((suite, ctx) => {
  const names = suite.methods.map((m) => m.name);
  const name = names.find((n, i) => names.indexOf(n) !== i);
  if (name !== undefined) ctx.addIssue({ code: "custom", path: ["methods"], message: `method name "${name}" appears twice` });
  const seed = suite.seeds.find((s, i) => suite.seeds.indexOf(s) !== i);
  if (seed !== undefined) ctx.addIssue({ code: "custom", path: ["seeds"], message: `seed ${seed} appears twice` });
});

export type SuiteYaml = z.input<typeof suiteSchema>;

/** Keys the suite sets for every run, so that a method cannot set them apart from the others. */
const SUITE_SET: [string[], string][] = [[["model"], "base"], [["output_dir"], "output_dir"], [["train", "seed"], "seeds"]];

export interface SuiteRun {
  method: string;
  seed: number;
  /** runs/<method>-seed<seed> in output_dir: the run's output_dir. */
  dir: string;
  config: TrainConfig;
}

export interface Suite {
  file: string;
  /** The suite as written (validated, defaults filled), for the report. */
  source: z.infer<typeof suiteSchema>;
  /** Absolute path. */
  base: string;
  methods: string[];
  seeds: number[];
  /** Seed by seed, each method in the suite's order: an interrupted comparison has every method's first seed first. */
  runs: SuiteRun[];
  /** The target task first, then the held-out tasks. */
  tasks: TaskConfig[];
  limit?: number;
  fewshot?: number;
  outputDir: string;
}

/**
 * Reads and validates a suite and every run's train config (so that a mistake in the last method
 * fails before the first one trains); paths are relative to the suite file.
 */
export function loadSuite(file: string): Suite {
  const raw = readYamlFile(file);
  if (!isMapping(raw)) throw new FormatError(file, "expected a mapping of suite keys");
  const parsed = suiteSchema.safeParse(raw);
  if (!parsed.success) throw new FormatError(file, parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
  const s = parsed.data;
  const dir = path.dirname(path.resolve(file));
  const outputDir = path.resolve(dir, s.output_dir);

  const sources: [string, Record<string, unknown>][] = [["train", s.train], ...s.methods.map(({ name: _, ...keys }, i): [string, Record<string, unknown>] => [`methods.${i}`, keys])];
  for (const [where, keys] of sources) {
    for (const [key, by] of SUITE_SET) {
      if (key.reduce<unknown>((node, k) => (isMapping(node) ? node[k] : undefined), keys) !== undefined) {
        throw new FormatError(file, `${where}.${key.join(".")}: set for every run by the suite's ${by}`);
      }
    }
  }
  const runs = s.seeds.flatMap((seed) => s.methods.map(({ name, ...keys }, i): SuiteRun => {
    const runDir = path.join(outputDir, "runs", `${name}-seed${seed}`);
    const merged = mergeOver(mergeOver(s.train, keys), { model: s.base, output_dir: runDir, train: { seed } });
    return { method: name, seed, dir: runDir, config: trainConfigFor(file, `methods.${i} (${name}) over train`, merged) };
  }));

  let tasks: TaskConfig[];
  try {
    // Task files are relative to the suite; built-in names stay names.
    tasks = resolveTasks([s.eval.target, ...s.eval.held_out].map((t) => (/\.ya?ml$/i.test(t) ? path.resolve(dir, t) : t)).join(","));
  } catch (error) {
    throw new FormatError(file, `eval: ${(error as Error).message}`);
  }
  return {
    file, source: s, base: path.resolve(dir, s.base), methods: s.methods.map((m) => m.name), seeds: s.seeds, runs, tasks,
    limit: s.eval.limit, fewshot: s.eval.fewshot, outputDir,
  };
}

/** A run's train config: validated, with the suite's relative paths resolved against its folder. */
function trainConfigFor(suiteFile: string, where: string, raw: Record<string, unknown>): TrainConfig {
  return parseTrainConfig(raw, `${suiteFile}: ${where}`, path.dirname(path.resolve(suiteFile)));
}

/** Mappings merged key by key; anything else (lists included) in `over` replaces what `base` has. */
function mergeOver(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const below = out[key];
    out[key] = isMapping(below) && isMapping(value) ? mergeOver(below, value) : value;
  }
  return out;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------
// Results

export interface TaskScore {
  task: string;
  role: "target" | "held-out";
  metric: string;
  base: number;
  tuned: number;
  /** tuned − base. */
  change: number;
}

export interface RunResult {
  method: string;
  seed: number;
  dir: string;
  /** Improvement on the target task's first metric. */
  target_gain: number;
  /** Mean drop of the held-out tasks' first metrics (positive = forgetting); null without held-out tasks. */
  mean_drop: number | null;
  /** Null when the loss diverged (JSON has no NaN). */
  final_loss: number | null;
  wall_s: number;
  peak_rss_mb: number;
  trainable_params: number;
  steps: number;
  scores: TaskScore[];
}

/** One quantity of a method over its seeds. */
export interface SeedStats {
  mean: number;
  /** As Comparison.spread says; null with one seed. */
  spread: number | null;
  min: number;
  max: number;
}

export interface MethodResult {
  method: string;
  seeds: number[];
  trainable_params: number;
  target_gain: SeedStats;
  mean_drop: SeedStats | null;
  final_loss: SeedStats | null;
  wall_s: SeedStats;
  peak_rss_mb: SeedStats;
}

/** Sample standard deviation from 3 seeds on; with 2 it would rest on one difference, so max − min is given instead. */
export type SpreadKind = "sample std" | "max - min" | "none (one seed)";

export interface Comparison {
  suite: string;
  base: string;
  target: string;
  held_out: string[];
  limit: number | null;
  fewshot: number | null;
  seeds: number[];
  spread: SpreadKind;
  base_scores: { task: string; metric: string; value: number; stderr: number | null; n: number }[];
  runs: RunResult[];
  methods: MethodResult[];
  notes: string[];
}

export interface CompareOptions {
  /** Evaluation runs here; training runs in child processes. */
  backend: Backend;
  /** When given, every training run computes here (else where its config says). */
  device?: TrainConfig["device"];
  threads?: number;
  log?: (message: string) => void;
}

/**
 * Trains what is not yet trained, scores what is not yet scored, and writes compare.json and
 * report.html into the suite's output_dir.
 */
export async function runComparison(suite: Suite, options: CompareOptions): Promise<Comparison> {
  const log = options.log ?? (() => {});
  fs.mkdirSync(suite.outputDir, { recursive: true });
  const evaluate = (checkpoint: { model: string; adapter?: string }, file: string) => {
    const spec = { ...checkpoint, tasks: suite.tasks.map((t) => t.file), limit: suite.limit ?? null, fewshot: suite.fewshot ?? null };
    if (fs.existsSync(file)) {
      const cached = readJsonFile(file) as { spec: unknown; results: EvalResults };
      if (isDeepStrictEqual(cached.spec, spec)) return cached.results;
    }
    log(`evaluating ${checkpoint.adapter ?? checkpoint.model}`);
    const results = evaluateCheckpoint(options.backend, checkpoint, suite.tasks, { limit: suite.limit, fewshot: suite.fewshot, log });
    writeFileAtomic(file, `${JSON.stringify({ spec, results }, null, 2)}\n`);
    return results;
  };
  // The base first: a task that cannot be scored fails before any training.
  const base = evaluate({ model: suite.base }, path.join(suite.outputDir, `base-${EVAL_FILE}`));
  const target = suite.tasks[0].task;

  const runs: RunResult[] = [];
  for (const run of suite.runs) {
    const config: TrainConfig = { ...run.config, device: options.device ?? run.config.device, threads: options.threads ?? run.config.threads };
    const name = path.basename(run.dir);
    if (finished(run.dir, config)) log(`${name}: trained earlier, kept`);
    else await train(run.dir, config, (message) => log(`${name}: ${message}`));
    const summary = readSummary(run.dir);
    const saved = config.method === "full" ? { model: path.join(run.dir, "model") } : { model: suite.base, adapter: path.join(run.dir, "adapter") };
    const report = compareResults(base, evaluate(saved, path.join(run.dir, EVAL_FILE)), { target });
    runs.push({
      method: run.method, seed: run.seed, dir: run.dir,
      target_gain: report.targetGain!, mean_drop: report.meanDrop ?? null,
      ...summary,
      scores: report.rows.map((r) => ({ task: r.task, role: r.role, metric: r.metric, base: r.base, tuned: r.tuned, change: r.delta })),
    });
  }

  const { spread, methods, notes } = summarizeRuns(runs, suite.methods, suite.seeds.length);
  const comparison: Comparison = {
    suite: path.resolve(suite.file), base: suite.base, target, held_out: suite.tasks.slice(1).map((t) => t.task),
    limit: suite.limit ?? null, fewshot: suite.fewshot ?? null, seeds: suite.seeds, spread,
    base_scores: base.tasks.flatMap((t) => Object.entries(t.metrics).map(([metric, m]) => ({ task: t.task, metric, value: m.value, stderr: m.stderr, n: t.n }))),
    runs, methods, notes,
  };
  writeFileAtomic(path.join(suite.outputDir, "compare.json"), `${JSON.stringify(comparison, null, 2)}\n`);
  writeComparisonReport(path.join(suite.outputDir, "report.html"), comparison, suite);
  return comparison;
}

/**
 * True when the run folder holds a finished training of this config. One of another config is an
 * error rather than silently mixed in or overwritten. Device and threads say where a run computed,
 * not what, so a rerun elsewhere keeps it.
 */
function finished(dir: string, config: TrainConfig): boolean {
  if (!fs.existsSync(path.join(dir, SUMMARY_FILE))) return false;
  const experiment = (c: unknown) => {
    const { device, threads, ...rest } = YAML.parse(YAML.stringify(c)) as Record<string, unknown>;
    return rest;
  };
  const previous = readYamlFile(path.join(dir, "config.yaml"));
  if (!isDeepStrictEqual(experiment(previous), experiment(config))) {
    throw new Error(`${dir} holds a finished run of another config (the suite changed since): remove the folder to train it again, or choose another output_dir`);
  }
  return true;
}

async function train(dir: string, config: TrainConfig, log: (message: string) => void): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  // Scores of an earlier, unfinished attempt belong to weights about to be replaced.
  fs.rmSync(path.join(dir, EVAL_FILE), { force: true });
  const file = path.join(dir, "config.yaml");
  writeFileAtomic(file, YAML.stringify(config));
  log(`training (${config.method}, seed ${config.train.seed})`);
  const code = await runSupervised(BIN, ["train", file]);
  if (code !== 0) throw new Error(`${dir}: training failed with exit code ${code} (its messages are above)`);
}

/** The fields of the run's summary.json that the comparison reports; a diverged loss (NaN) reads back as null. */
function readSummary(dir: string): Pick<RunResult, "final_loss" | "wall_s" | "peak_rss_mb" | "trainable_params" | "steps"> {
  const { final_loss, wall_s, peak_rss_mb, trainable_params, steps } = readJsonFile(path.join(dir, SUMMARY_FILE)) as Omit<RunSummary, "final_loss"> & { final_loss: number | null };
  return { final_loss, wall_s, peak_rss_mb, trainable_params, steps };
}

/** Each method's mean and spread over its seeds, and which differences between methods the spread swallows. */
export function summarizeRuns(runs: readonly RunResult[], methodNames: readonly string[], seeds: number): { spread: SpreadKind; methods: MethodResult[]; notes: string[] } {
  const spread = spreadKind(seeds);
  const methods = methodNames.map((method): MethodResult => {
    const mine = runs.filter((r) => r.method === method);
    const stats = (values: (number | null)[]) => (values.every((v) => v !== null) ? seedStats(values as number[], spread) : null);
    return {
      method, seeds: mine.map((r) => r.seed), trainable_params: mine[0].trainable_params,
      target_gain: stats(mine.map((r) => r.target_gain))!, mean_drop: stats(mine.map((r) => r.mean_drop)),
      final_loss: stats(mine.map((r) => r.final_loss)), wall_s: stats(mine.map((r) => r.wall_s))!, peak_rss_mb: stats(mine.map((r) => r.peak_rss_mb))!,
    };
  });
  return { spread, methods, notes: spreadNotes(methods, spread) };
}

function spreadKind(seeds: number): SpreadKind {
  return seeds >= 3 ? "sample std" : seeds === 2 ? "max - min" : "none (one seed)";
}

function seedStats(values: readonly number[], kind: SpreadKind): SeedStats {
  const mean = values.reduce((a, v) => a + v, 0) / values.length;
  const min = Math.min(...values);
  const max = Math.max(...values);
  const spread = kind === "sample std" ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1))
    : kind === "max - min" ? max - min : null;
  return { mean, spread, min, max };
}

/** A note for every pair of methods whose mean target gain (or held-out drop) differs by less than the larger of their spreads. */
function spreadNotes(methods: readonly MethodResult[], kind: SpreadKind): string[] {
  if (kind === "none (one seed)") return ["one seed per method: no spread, so no difference can be told from seed noise"];
  const notes: string[] = [];
  const quantities: [string, (m: MethodResult) => SeedStats | null][] = [["target gain", (m) => m.target_gain], ["held-out drop", (m) => m.mean_drop]];
  methods.forEach((a, i) => methods.slice(i + 1).forEach((b) => {
    for (const [label, get] of quantities) {
      const x = get(a);
      const y = get(b);
      if (!x || !y) continue;
      const difference = Math.abs(x.mean - y.mean);
      const spread = Math.max(x.spread!, y.spread!);
      if (difference < spread) notes.push(`${b.method} vs ${a.method}: ${label} difference ${formatValue(difference)} is within the seed spread (${kind} ${formatValue(spread)})`);
    }
  }));
  return notes;
}

// ---------------------------------------------------------------------------------------------
// Presentation

function signed(x: number): string {
  return `${x >= 0 ? "+" : ""}${formatValue(x)}`;
}

function showStats(s: SeedStats | null, kind: SpreadKind): string {
  if (!s) return "";
  if (s.spread === null) return signed(s.mean);
  return kind === "sample std" ? `${signed(s.mean)} ± ${formatValue(s.spread)}` : `${signed(s.mean)} [${signed(s.min)}, ${signed(s.max)}]`;
}

/** The learning-forgetting table, one row per method, as text cells (the terminal's and the report's). */
function methodRows(c: Comparison): string[][] {
  const mean = (s: SeedStats | null, digits: number) => (s ? s.mean.toFixed(digits) : "");
  return [
    ["method", "seeds", `target gain (${c.target})`, "held-out drop", "trainable params", "wall s", "peak RSS MB", "final loss"],
    ...c.methods.map((m) => [
      m.method, String(m.seeds.length), showStats(m.target_gain, c.spread), showStats(m.mean_drop, c.spread),
      m.trainable_params.toLocaleString("en-US"), mean(m.wall_s, 1), mean(m.peak_rss_mb, 0), mean(m.final_loss, 4),
    ]),
  ];
}

/** What the table's numbers are: the base's scores and the spread's meaning. */
function legend(c: Comparison): string[] {
  const firstMetric = (task: string) => c.base_scores.find((s) => s.task === task)!;
  const base = [c.target, ...c.held_out].map((task) => `${task} ${firstMetric(task).metric} ${formatValue(firstMetric(task).value)}`);
  return [
    `base ${c.base}: ${base.join(", ")} (${firstMetric(c.target).n} items per task)`,
    `target gain: tuned − base on ${c.target}; held-out drop: mean of base − tuned over ${c.held_out.length ? c.held_out.join(", ") : "no held-out tasks"} (positive = forgetting)`,
    c.spread === "none (one seed)" ? "one seed per method" : `mean over seeds ${c.seeds.join(", ")}; spread: ${c.spread === "sample std" ? "± sample standard deviation" : "[min, max]"}`,
  ];
}

/** The terminal report: legend, table and the within-spread notes. */
export function formatComparison(c: Comparison): string {
  return `${legend(c).join("\n")}\n\n${alignTable(methodRows(c))}${c.notes.length ? `\n${c.notes.join("\n")}\n` : ""}`;
}

function writeComparisonReport(file: string, c: Comparison, suite: Suite): void {
  const [columns, ...rows] = methodRows(c);
  const tables: ReportTable[] = [
    { title: "Learning and forgetting per method", columns, rows },
    {
      title: `Scores per task: base and each method (mean over ${c.seeds.length === 1 ? "one seed" : `${c.seeds.length} seeds`})`,
      columns: ["task", "role", "metric", "base", ...c.methods.map((m) => m.method)],
      rows: c.runs[0].scores.map((score, i) => [score.task, score.role, score.metric, score.base,
        ...c.methods.map((m) => {
          const mine = c.runs.filter((r) => r.method === m.method);
          return mine.reduce((a, r) => a + r.scores[i].tuned, 0) / mine.length;
        })]),
    },
    {
      title: "Runs",
      columns: ["run", "target gain", "held-out drop", "final loss", "wall s", "peak RSS MB", "trainable params", "steps"],
      rows: c.runs.map((r) => [path.basename(r.dir), r.target_gain, r.mean_drop, r.final_loss, r.wall_s, r.peak_rss_mb, r.trainable_params, r.steps]),
    },
  ];
  const interval = (s: SeedStats): [number, number] | undefined =>
    s.spread === null ? undefined : c.spread === "sample std" ? [s.mean - s.spread, s.mean + s.spread] : [s.min, s.max];
  writeReport(file, {
    title: `tasktune compare: ${c.methods.map((m) => m.method).join(", ")} on ${c.target}`,
    config: suite.source,
    metrics: [],
    tables,
    notes: [...legend(c), ...c.notes],
    scatters: c.held_out.length ? [{
      title: `Learning against forgetting (${c.spread === "sample std" ? "bars: ± sample std" : c.spread === "max - min" ? "bars: min to max" : "one seed"})`,
      xLabel: `target gain (${c.target})`,
      yLabel: "mean held-out drop (positive = forgetting)",
      series: c.methods.map((m) => ({
        label: m.method,
        points: [{ x: m.target_gain.mean, y: m.mean_drop!.mean, xRange: interval(m.target_gain), yRange: interval(m.mean_drop!) }],
        samples: c.runs.filter((r) => r.method === m.method).map((r): [number, number] => [r.target_gain, r.mean_drop!]),
      })),
    }] : [],
  });
}
