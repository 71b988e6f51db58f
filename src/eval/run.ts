// Evaluating a model on tasks: prompts (with seeded few-shot demonstrations) fitted to the model's
// context, multiple-choice and log-likelihood requests scored in fixed-shape batches, generations
// run greedily (or seeded) with stop strings, and per-item metrics aggregated with their standard
// error. Nothing depends on the clock or on other tasks, so a rerun gives the same numbers.
import { existsSync } from "node:fs";
import path from "node:path";
import { loadAdapter } from "../adapters/peft-io.ts";
import { ADAPTER_CONFIG } from "../adapters/peft-config.ts";
import type { Backend } from "../engine/backend.ts";
import { FormatError } from "../io/errors.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { loadTokenizerFor } from "../models/gguf-loader.ts";
import { loadModel } from "../models/index.ts";
import type { Model } from "../models/model.ts";
import { Generator } from "./generate.ts";
import { LogLikelihoodScorer, type ScoringRequest } from "./loglikelihood.ts";
import {
  bitsPerByte, byteLength, compileExtractor, exactMatch, higherIsBetter, meanWithStderr, multipleChoiceScores, perplexity, rougeL, tokenF1,
  type OutputType,
} from "./metrics.ts";
import type { MetricSpec, TaskConfig } from "./tasks/config.ts";
import { loadDocuments, type TaskDocument } from "./tasks/documents.ts";
import { promptParts, renderPrompt, type PromptParts } from "./tasks/prompts.ts";

export interface EvalOptions {
  /** Demonstrations per item for every task (default: each task's fewshot.k). */
  fewshot?: number;
  /** Items per task (default: each task's limit, else all). */
  limit?: number;
  /** Few-shot seed for every task (default: each task's fewshot.seed). */
  seed?: number;
  /** Sequences per forward pass (default 16; smaller for long sequences over a large vocabulary). */
  batchSize?: number;
  /** Longest sequence in tokens (default: the model's maximum positions). */
  maxLength?: number;
  /** Keep every item's prompt, prediction and scores in the results. */
  logSamples?: boolean;
  /** Progress messages. */
  log?: (message: string) => void;
}

export interface MetricValue {
  value: number;
  /** Standard error of the mean over items; null for corpus-level values. */
  stderr: number | null;
  higherIsBetter: boolean;
}

export interface Sample {
  index: number;
  line: number;
  prompt: string;
  references: string[];
  choices?: string[];
  logLikelihoods?: number[];
  /** The chosen choice's index, or the generated text. */
  prediction: number | string;
  scores: Record<string, number>;
}

export interface TaskResult {
  task: string;
  /** The task file and its data file. */
  file: string;
  data: string;
  outputType: OutputType;
  n: number;
  /** Demonstrations asked for per item, and the seed that drew them. */
  fewshot: number;
  fewshotSeed: number;
  /** By metric label, in the task's order. */
  metrics: Record<string, MetricValue>;
  /** Items that got fewer demonstrations than asked for, to fit the model's context. */
  fewshotReduced: number;
  /** Demonstrations per item actually in the prompts, on average. */
  meanShots: number;
  /** Items whose prompt was cut from the left (or whose generation budget was cut) even with no demonstrations. */
  truncated: number;
  samples?: Sample[];
}

export interface EvalResults {
  model: string;
  adapter?: string;
  maxLength: number;
  tasks: TaskResult[];
}

const DEFAULT_BATCH = 16;
/** Cap on batch × sequence × vocabulary floats of one forward pass's logits (128 MiB). */
const MAX_LOGIT_FLOATS = 2 ** 25;

/** The longest sequence a model takes. */
export function modelMaxLength(model: Model): number {
  const c = model.config;
  return c.family === "llama" ? c.maxPositionEmbeddings : c.maxPositions;
}

/** Evaluates a loaded model (with whatever adapter is attached) on tasks. */
export function evaluateTasks(model: Model, tokenizer: Tokenizer, tasks: readonly TaskConfig[], options: EvalOptions = {}): TaskResult[] {
  for (const task of tasks) {
    const needs = task.outputType === "classification" ? "sequence-classification" : "causal-lm";
    if (model.kind !== needs) throw new Error(`task ${task.task} (${task.outputType}) needs a ${needs} model, not ${model.config.modelType} ${model.kind}`);
  }
  const maxLength = Math.min(options.maxLength ?? Infinity, modelMaxLength(model));
  const scoring = new ScoringPool(model, options.batchSize ?? DEFAULT_BATCH, maxLength);
  let generator: Generator | undefined;
  try {
    return tasks.map((task) => {
      const context = prepareTask(task, options);
      const log = options.log ?? (() => {});
      log(`${task.task}: ${context.docs.length} items, ${context.k}-shot (${task.outputType})`);
      const started = performance.now();
      let result: TaskResult;
      if (task.outputType === "classification") {
        result = runClassification(task, context, tokenizer, model, maxLength, options);
      } else if (task.outputType === "generate_until") {
        generator ??= new Generator(model, tokenizer, { batchSize: options.batchSize ?? DEFAULT_BATCH, maxLength });
        result = runGeneration(task, context, tokenizer, generator, maxLength, options);
      } else {
        result = runScoring(task, context, tokenizer, scoring, maxLength, options);
      }
      log(`${task.task}: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return result;
    });
  } finally {
    scoring.free();
    generator?.free();
  }
}

/**
 * Loads a checkpoint (a Hugging Face folder or a .gguf file) and adapter, evaluates it and frees
 * it. The tokenizer is the folder's tokenizer.json or the GGUF's own.
 */
export function evaluateCheckpoint(backend: Backend, checkpoint: { model: string; adapter?: string }, tasks: readonly TaskConfig[], options: EvalOptions = {}): EvalResults {
  const tokenizer = loadTokenizerFor(checkpoint.model, backend);
  const model = loadModel(backend, checkpoint.model);
  const adapter = checkpoint.adapter ? loadAdapter(model, checkpoint.adapter) : undefined;
  try {
    const results = evaluateTasks(model, tokenizer, tasks, options);
    return { model: checkpoint.model, ...(checkpoint.adapter ? { adapter: checkpoint.adapter } : {}), maxLength: Math.min(options.maxLength ?? Infinity, modelMaxLength(model)), tasks: results };
  } finally {
    adapter?.free();
    model.free();
  }
}

/** True for a PEFT adapter folder (adapter_config.json), as opposed to a model checkpoint. */
export function isAdapterDir(dir: string): boolean {
  return existsSync(path.join(dir, ADAPTER_CONFIG));
}

interface PreparedTask {
  docs: TaskDocument[];
  parts: PromptParts[];
  k: number;
  seed: number;
}

function prepareTask(task: TaskConfig, options: EvalOptions): PreparedTask {
  const k = options.fewshot ?? task.fewshot.k;
  const seed = options.seed ?? task.fewshot.seed;
  const limit = options.limit ?? task.limit;
  const docs = loadDocuments(task, task.data, limit);
  // Without a source file, demonstrations come from all of the task's rows (not just the first
  // `limit`), so that an item's prompt does not depend on the limit.
  const pool = k === 0 ? undefined : task.fewshot.source ? loadDocuments(task, task.fewshot.source) : limit === undefined ? docs : loadDocuments(task, task.data);
  return { docs, parts: promptParts(task, docs, pool, k, seed), k, seed };
}

function baseResult(task: TaskConfig, prepared: PreparedTask): Omit<TaskResult, "metrics" | "fewshotReduced" | "meanShots" | "truncated"> {
  return { task: task.task, file: task.file, data: task.data, outputType: task.outputType, n: prepared.docs.length, fewshot: prepared.k, fewshotSeed: prepared.seed };
}

/** The prompt with as many demonstrations as fit `fits(tokens)`, dropping the earliest first. */
function fitPrompt(parts: PromptParts, tokenizer: Tokenizer, fits: (tokens: number) => boolean): { text: string; ids: number[]; shots: number } {
  for (let shots = parts.demonstrations.length; ; shots--) {
    const text = renderPrompt(parts, shots);
    const ids = tokenizer.encode(text);
    if (shots === 0 || fits(ids.length)) return { text, ids, shots };
  }
}

// ---------------------------------------------------------------------------------------------
// classification (an encoder's head)

function runClassification(task: TaskConfig, prepared: PreparedTask, tokenizer: Tokenizer, model: Model, maxLength: number, options: EvalOptions): TaskResult {
  const { docs } = prepared;
  const batchSize = options.batchSize ?? DEFAULT_BATCH;
  const correct: number[] = [];
  const samples: Sample[] = [];
  let truncated = 0;
  for (let start = 0; start < docs.length; start += batchSize) {
    const chunk = docs.slice(start, start + batchSize);
    const encoded = chunk.map((doc) => {
      const ids = tokenizer.encode(doc.prompt);
      if (ids.length > maxLength) truncated++;
      return ids.slice(0, maxLength);
    });
    const seqLen = Math.max(1, ...encoded.map((ids) => ids.length));
    const inputIds = new Int32Array(chunk.length * seqLen).fill(tokenizer.padId ?? 0);
    const attentionMask = new Int32Array(chunk.length * seqLen);
    encoded.forEach((ids, b) => ids.forEach((id, t) => {
      inputIds[b * seqLen + t] = id;
      attentionMask[b * seqLen + t] = 1;
    }));
    const { logits, logitsShape } = model.run({ batchSize: chunk.length, seqLen, inputIds, attentionMask });
    const labels = logitsShape[logitsShape.length - 1];
    chunk.forEach((doc, b) => {
      const row = Array.from(logits.subarray(b * labels, (b + 1) * labels));
      const prediction = row.indexOf(Math.max(...row));
      correct.push(prediction === doc.gold ? 1 : 0);
      if (options.logSamples) samples.push({ index: doc.index, line: doc.line, prompt: doc.prompt, references: doc.references, choices: doc.choices, prediction, scores: { acc: correct.at(-1)! } });
    });
  }
  const { value, stderr } = meanWithStderr(correct);
  const metrics = Object.fromEntries(task.metrics.map((m) => [m.label, { value, stderr, higherIsBetter: true }]));
  return { ...baseResult(task, prepared), metrics, fewshotReduced: 0, meanShots: 0, truncated, ...(options.logSamples ? { samples } : {}) };
}

// ---------------------------------------------------------------------------------------------
// multiple_choice and loglikelihood

function runScoring(task: TaskConfig, prepared: PreparedTask, tokenizer: Tokenizer, scoring: ScoringPool, maxLength: number, options: EvalOptions): TaskResult {
  const { docs, parts } = prepared;
  let fewshotReduced = 0;
  let truncated = 0;
  let shots = 0;
  const requests: ScoringRequest[] = [];
  const continuationsOf = (doc: TaskDocument) =>
    task.outputType === "multiple_choice" ? doc.choices!.map((c) => task.targetDelimiter + c) : [task.targetDelimiter + doc.references[0]];
  const prompts = docs.map((doc, i) => {
    const continuations = continuationsOf(doc).map((text) => ({ text, ids: tokenizer.encode(text, { addSpecialTokens: false }) }));
    const longest = Math.max(...continuations.map((c) => c.ids.length));
    const where = `${task.file}: ${task.data}:${doc.line}`;
    if (continuations.some((c) => c.ids.length === 0)) throw new FormatError(where, "an answer to score encodes to no tokens");
    if (longest >= maxLength) throw new FormatError(where, `an answer of ${longest} tokens leaves no room for context in ${maxLength} positions`);
    const prompt = fitPrompt(parts[i], tokenizer, (n) => n + longest <= maxLength);
    if (prompt.ids.length === 0) throw new FormatError(where, "the prompt encodes to no tokens; scoring needs at least one token of context");
    if (prompt.shots < parts[i].demonstrations.length) fewshotReduced++;
    shots += prompt.shots;
    if (prompt.ids.length + longest > maxLength) truncated++;
    for (const c of continuations) requests.push({ context: prompt.ids, continuation: c.ids });
    return { prompt, continuations };
  });
  const scores = scoring.score(requests);

  const metrics = task.metrics;
  const perItem: Record<string, number[]> = Object.fromEntries(metrics.map((m) => [m.label, []]));
  const samples: Sample[] = [];
  const tokenCounts: number[] = [];
  const byteCounts: number[] = [];
  let offset = 0;
  docs.forEach((doc, i) => {
    const { prompt, continuations } = prompts[i];
    const lls = scores.slice(offset, offset + continuations.length);
    offset += continuations.length;
    const itemScores: Record<string, number> = {};
    let prediction: number | string;
    if (task.outputType === "multiple_choice") {
      const mc = multipleChoiceScores(lls, doc.choices!, doc.gold!);
      prediction = mc.prediction;
      for (const m of metrics) itemScores[m.label] = m.name === "acc_norm" ? mc.acc_norm : mc.acc;
    } else {
      prediction = continuations[0].text;
      tokenCounts.push(continuations[0].ids.length);
      byteCounts.push(byteLength(continuations[0].text));
      for (const m of metrics) if (m.name === "loglikelihood") itemScores[m.label] = lls[0];
    }
    for (const [label, value] of Object.entries(itemScores)) perItem[label].push(value);
    if (options.logSamples) {
      samples.push({ index: doc.index, line: doc.line, prompt: prompt.text, references: doc.references, choices: doc.choices, logLikelihoods: lls, prediction, scores: itemScores });
    }
  });

  const allLls = task.outputType === "loglikelihood" ? scores : [];
  const values: Record<string, MetricValue> = {};
  for (const m of metrics) {
    const hib = higherIsBetter(m.name);
    if (m.name === "perplexity") values[m.label] = { value: perplexity(allLls, tokenCounts), stderr: null, higherIsBetter: hib };
    else if (m.name === "bits_per_byte") values[m.label] = { value: bitsPerByte(allLls, byteCounts), stderr: null, higherIsBetter: hib };
    else {
      const { value, stderr } = meanWithStderr(perItem[m.label]);
      values[m.label] = { value, stderr, higherIsBetter: hib };
    }
  }
  return { ...baseResult(task, prepared), metrics: values, fewshotReduced, meanShots: shots / docs.length, truncated, ...(options.logSamples ? { samples } : {}) };
}

/**
 * Log-likelihood scorers of a few sequence lengths (from 32 up to the model's maximum in steps of
 * about √2), each created on first use: short requests do not pay for the longest one's shape.
 */
class ScoringPool {
  private readonly scorers = new Map<number, LogLikelihoodScorer>();

  constructor(private readonly model: Model, private readonly batchSize: number, private readonly maxLength: number) {}

  /** The smallest of 32, 48, 64, 96, 128, 192, ... (steps of about √2) that holds `tokens`, capped at the maximum. */
  bucket(tokens: number): number {
    let length = 32;
    while (length < tokens && length < this.maxLength) length = length % 3 === 0 ? (length / 3) * 4 : (length / 2) * 3;
    return Math.min(length, this.maxLength);
  }

  score(requests: readonly ScoringRequest[]): number[] {
    const groups = new Map<number, number[]>();
    requests.forEach((r, i) => {
      const length = this.bucket(r.context.length + r.continuation.length);
      const group = groups.get(length);
      if (group) group.push(i);
      else groups.set(length, [i]);
    });
    const out = new Array<number>(requests.length);
    for (const [length, indices] of [...groups].sort((a, b) => a[0] - b[0])) {
      const scores = this.scorer(length).score(indices.map((i) => requests[i]));
      indices.forEach((i, j) => (out[i] = scores[j]));
    }
    return out;
  }

  private scorer(length: number): LogLikelihoodScorer {
    let scorer = this.scorers.get(length);
    if (!scorer) {
      const batch = Math.max(1, Math.min(this.batchSize, Math.floor(MAX_LOGIT_FLOATS / (length * this.model.config.vocabSize))));
      scorer = new LogLikelihoodScorer(this.model, batch, length);
      this.scorers.set(length, scorer);
    }
    return scorer;
  }

  free(): void {
    for (const s of this.scorers.values()) s.free();
    this.scorers.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// generate_until

function runGeneration(task: TaskConfig, prepared: PreparedTask, tokenizer: Tokenizer, generator: Generator, maxLength: number, options: EvalOptions): TaskResult {
  const { docs, parts } = prepared;
  const gen = task.generation;
  let fewshotReduced = 0;
  let truncated = 0;
  let shots = 0;
  // Every prompt gets the task's token budget when it fits, else what the model's context leaves.
  const jobs = docs.map((_, i) => {
    const prompt = fitPrompt(parts[i], tokenizer, (n) => n + gen.max_new_tokens <= maxLength);
    if (prompt.shots < parts[i].demonstrations.length) fewshotReduced++;
    shots += prompt.shots;
    if (prompt.ids.length + gen.max_new_tokens <= maxLength) return { text: prompt.text, maxNewTokens: gen.max_new_tokens };
    truncated++;
    // What the context leaves, in steps of 16 tokens so that prompts share few budgets (one generate() call each).
    const left = maxLength - prompt.ids.length;
    if (left >= 1) return { text: prompt.text, maxNewTokens: left >= 16 ? left - (left % 16) : left };
    // Even alone the question is too long: keep its end, leaving a quarter of the context to answer in.
    const maxNewTokens = Math.max(1, Math.min(gen.max_new_tokens, Math.floor(maxLength / 4)));
    let keep = maxLength - maxNewTokens;
    let text = tokenizer.decode(prompt.ids.slice(-keep));
    while (tokenizer.encode(text).length > maxLength - maxNewTokens && keep > 1) text = tokenizer.decode(prompt.ids.slice(-(--keep)));
    return { text, maxNewTokens };
  });

  // One generate() call per token budget, in order of first appearance.
  const byBudget = new Map<number, number[]>();
  jobs.forEach((job, i) => {
    const group = byBudget.get(job.maxNewTokens);
    if (group) group.push(i);
    else byBudget.set(job.maxNewTokens, [i]);
  });
  const texts = new Array<string>(docs.length);
  const log = options.log ?? (() => {});
  let done = 0;
  for (const [maxNewTokens, indices] of byBudget) {
    const chunk = Math.max(generator.batchSize, 64);
    for (let start = 0; start < indices.length; start += chunk) {
      const slice = indices.slice(start, start + chunk);
      const generations = generator.generate(slice.map((i) => jobs[i].text), {
        maxNewTokens, stop: gen.until, temperature: gen.temperature, topK: gen.top_k, topP: gen.top_p, seed: gen.seed,
      });
      slice.forEach((i, j) => (texts[i] = generations[j].text));
      done += slice.length;
      if (done < docs.length) log(`${task.task}: generated ${done}/${docs.length}`);
    }
  }

  const scorers = task.metrics.map((m) => ({ spec: m, score: generationMetric(m) }));
  const perItem: Record<string, number[]> = Object.fromEntries(task.metrics.map((m) => [m.label, []]));
  const samples: Sample[] = [];
  docs.forEach((doc, i) => {
    const itemScores: Record<string, number> = {};
    for (const { spec, score } of scorers) itemScores[spec.label] = score(texts[i], doc.references);
    for (const [label, value] of Object.entries(itemScores)) perItem[label].push(value);
    if (options.logSamples) samples.push({ index: doc.index, line: doc.line, prompt: jobs[i].text, references: doc.references, prediction: texts[i], scores: itemScores });
  });
  const metrics: Record<string, MetricValue> = {};
  for (const m of task.metrics) {
    const { value, stderr } = meanWithStderr(perItem[m.label]);
    metrics[m.label] = { value, stderr, higherIsBetter: higherIsBetter(m.name) };
  }
  return { ...baseResult(task, prepared), metrics, fewshotReduced, meanShots: shots / docs.length, truncated, ...(options.logSamples ? { samples } : {}) };
}

/** A generation metric as a function of (generated text, references): extraction, then normalisation and the score. */
export function generationMetric(spec: MetricSpec): (text: string, references: readonly string[]) => number {
  const extract = spec.extract === undefined ? (s: string) => s : compileExtractor(spec.extract);
  switch (spec.name) {
    case "exact_match":
      return (text, refs) => exactMatch(extract(text), refs, spec.normalize);
    case "f1":
      return (text, refs) => tokenF1(extract(text), refs, spec.normalize);
    case "rouge_l":
      return (text, refs) => rougeL(extract(text), refs, spec.normalize);
    default:
      throw new Error(`${spec.name} is not a generation metric`);
  }
}

// ---------------------------------------------------------------------------------------------
// Presentation

/** A plain-text table: task, metric, value, ± stderr, n, shots. */
export function formatResultsTable(results: readonly TaskResult[]): string {
  const rows = [["task", "metric", "value", "stderr", "n", "shots"]];
  for (const r of results) {
    for (const [label, m] of Object.entries(r.metrics)) {
      const shots = r.meanShots < r.fewshot ? `${r.fewshot} (avg ${r.meanShots.toFixed(2)})` : String(r.fewshot);
      rows.push([r.task, label, formatValue(m.value), m.stderr === null ? "" : `± ${formatValue(m.stderr)}`, String(r.n), shots]);
    }
  }
  return alignTable(rows);
}

export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(1) : value.toFixed(4);
}

/** Columns padded to their widest cell; numeric-looking columns right-aligned. */
export function alignTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const numeric = rows[0].map((_, c) => rows.slice(1).every((r) => r[c] === "" || /^[-±+\s\d.e]+$|^(NaN|-?Infinity)$/.test(r[c])));
  const line = (r: readonly string[]) => r.map((cell, c) => (numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ").trimEnd();
  return [line(rows[0]), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)].join("\n") + "\n";
}
