// A whole training run from a config: data, model, method, trainer, before/after task accuracy,
// checkpoints and resume, metrics.jsonl, report.html, and the final adapter/ or model/ folder.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { LoraAdapter } from "../adapters/lora.ts";
import { saveAdapter } from "../adapters/peft-io.ts";
import { loraConfig } from "../adapters/peft-config.ts";
import { Backend } from "../engine/backend.ts";
import { batchingTokenIds, evalBatches } from "../data/batches.ts";
import { loadDataset } from "../data/dataset.ts";
import { MixtureSchedule } from "../data/mixture.ts";
import { readRows } from "../data/records.ts";
import { LogLikelihoodScorer, multipleChoiceAccuracy, type MultipleChoiceItem } from "../eval/loglikelihood.ts";
import { evaluateTasks, type TaskResult } from "../eval/run.ts";
import { resolveTasks } from "../eval/tasks/config.ts";
import { FormatError } from "../io/errors.ts";
import { loadConfig } from "../io/hf-config.ts";
import { writeFileAtomic } from "../io/files.ts";
import { ShardedSafetensorsWriter } from "../io/safetensors.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { loadTokenizerFor } from "../models/gguf-loader.ts";
import { createModel, loadModel } from "../models/index.ts";
import type { Model } from "../models/model.ts";
import { METRICS_FILE, MetricsLog, readMetrics, TrainingProgress, writeReport, type MetricsRecord, type ReportTable } from "../report/index.ts";
import { trainingTasks, type TrainConfig } from "./config.ts";
import type { NamedParam } from "./optimizer.ts";
import { latestCheckpoint, Trainer, TRAIN_DEFAULTS, type TrainOptions } from "./trainer.ts";

/** `<output_dir>/summary.json`: what a comparison of runs reads. */
export const SUMMARY_FILE = "summary.json";

export interface RunSummary {
  final_loss: number;
  steps: number;
  trainable_params: number;
  /** Wall time of this process's run (data, model, training, evaluation), and its peak resident memory. */
  wall_s: number;
  peak_rss_mb: number;
  tasks: string[];
}

export interface RunResult {
  outputDir: string;
  finalLoss: number;
  accuracyBefore?: number;
  accuracyAfter?: number;
  reportFile: string;
  summary: RunSummary;
}

export interface RunOptions {
  resume?: boolean;
  /** Where progress and messages go (the terminal by default). */
  stream?: NodeJS.WriteStream;
}

export async function runTraining(config: TrainConfig, options: RunOptions = {}): Promise<RunResult> {
  const out = config.output_dir;
  const checkpoints = path.join(out, "checkpoints");
  const resumeFrom = options.resume ? latestCheckpoint(checkpoints) : undefined;
  if (options.resume && !resumeFrom) throw new Error(`--resume: no checkpoint in ${checkpoints}`);
  fs.mkdirSync(out, { recursive: true });
  writeFileAtomic(path.join(out, "config.yaml"), YAML.stringify(config));
  const progress = new TrainingProgress({ stream: options.stream });
  const say = (message: string) => progress.log(message);

  const backend = await Backend.open({ device: config.device, threads: config.threads });
  const tokenizer = loadTokenizerFor(config.model, backend);
  const model = config.init === "random" ? freshModel(backend, config.model, config.train.seed) : loadModel(backend, config.model, { weightDtype: config.method === "full" ? "f32" : config.base_dtype });
  const t = config.train;
  const tasks = trainingTasks(config).map((task) => ({
    ...task,
    dataset: loadDataset(task.train, tokenizer, {
      seqLen: t.seq_len, mode: config.data.mode,
      eval: task.eval ? { file: task.eval } : task.eval_fraction ? { fraction: task.eval_fraction, seed: t.seed } : undefined,
    }),
  }));
  say(`${config.model}: ${model.config.modelType}, ${model.parameterCount.toLocaleString("en-US")} parameters on ${backend.label} (${backend.threadCount} threads)`);
  for (const { train, dataset: { stats: { train: s } } } of tasks) {
    say(`${train}: ${s.rows} ${s.shape} rows, ${s.tokens} tokens${s.truncated ? `, ${s.truncated} truncated to ${t.seq_len} tokens` : ""}`);
  }

  const adapter = config.method === "full" ? undefined : new LoraAdapter(model, loraConfig({
    r: config.lora.r, loraAlpha: config.lora.alpha, loraDropout: config.lora.dropout, targetModules: config.lora.target_modules,
    useRslora: config.lora.use_rslora, useDora: config.method === "dora", layersToTransform: config.lora.layers_to_transform,
    initLoraWeights: config.lora.init_lora_weights, modulesToSave: config.lora.modules_to_save, bias: config.lora.bias, taskType: model.kind === "causal-lm" ? "CAUSAL_LM" : "SEQ_CLS",
    baseModelNameOrPath: config.model, fanInFanOut: model.config.family === "gpt2",
  }), { seed: t.seed });
  const params: NamedParam[] = adapter
    ? adapter.stateDict.map(([name, tensor]) => ({ name, tensor }))
    : model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
  const trainable = params.reduce((n, p) => n + p.tensor.elements, 0);
  say(`${config.method}: ${trainable.toLocaleString("en-US")} trainable parameters (${((100 * trainable) / model.parameterCount).toFixed(2)}% of the model)`);

  const trainOptions: TrainOptions = {
    ...TRAIN_DEFAULTS, steps: t.steps, batchSize: t.batch_size, gradAccum: t.grad_accum, seqLen: t.seq_len, lr: t.lr,
    warmup: t.warmup, schedule: t.schedule, weightDecay: t.weight_decay, maxGradNorm: t.max_grad_norm, seed: t.seed,
    evalEvery: t.eval_every, saveEvery: t.save_every,
    tasks: tasks.map((task) => task.name), loss: { balance: config.loss.balance, focalGamma: config.loss.focal_gamma },
  };
  const trainer = new Trainer(model, params, trainOptions, adapter);
  const batching = { batchSize: t.batch_size, seqLen: t.seq_len, mode: config.data.mode, ...batchingTokenIds(tokenizer) };
  const schedule = new MixtureSchedule(
    tasks.map((task) => ({ name: task.name, examples: task.dataset.train, weight: task.weight, cap: task.cap })),
    { ...batching, seed: t.seed, strategy: config.data.mixing, temperature: config.data.temperature },
  );
  if (tasks.length > 1) say(`mixing (${config.data.mixing}): ${tasks.map((task, i) => `${task.name} ${(100 * schedule.rates[i]).toFixed(1)}%`).join(", ")}`);
  const heldOut = tasks.map((task) => ({ name: task.name, batches: task.dataset.eval.length ? [...evalBatches(task.dataset.eval, batching)].slice(0, t.eval_batches) : [] }));
  const task = config.eval ? taskItems(config.eval, tokenizer) : undefined;
  const scorer = task ? new LogLikelihoodScorer(model, t.batch_size, t.seq_len) : undefined;
  const accuracy = () => (scorer && task ? multipleChoiceAccuracy(scorer, task).accuracy : undefined);
  const evalTasks = config.eval_tasks?.flatMap((spec) => resolveTasks(spec));
  const scoreEvalTasks = (): TaskResult[] => (evalTasks ? evaluateTasks(model, tokenizer, evalTasks, { limit: config.eval_limit }) : []);
  const started = performance.now();

  try {
    let accuracyBefore: number | undefined;
    if (resumeFrom) {
      trainer.loadCheckpoint(resumeFrom);
      say(`resumed from ${resumeFrom} (step ${trainer.step})`);
      accuracyBefore = readMetrics(path.join(out, METRICS_FILE)).find((r) => r.step === 0)?.eval_accuracy;
    }
    const metrics = new MetricsLog(out, resumeFrom ? { resumeFromStep: trainer.step } : {});
    if (!resumeFrom && (task || evalTasks)) {
      accuracyBefore = accuracy();
      const before = taskMetrics(scoreEvalTasks());
      metrics.append({ step: 0, ...(accuracyBefore === undefined ? {} : { eval_accuracy: accuracyBefore }), ...before });
      if (task) say(`before training: accuracy ${(100 * accuracyBefore!).toFixed(1)}% on ${task.length} examples of ${config.eval!.file}`);
      if (evalTasks) say(`before training: ${formatMetrics(before)}`);
    }
    let finalLoss = NaN;
    let accuracyAfter: number | undefined;
    progress.start(t.steps, trainer.step);
    trainer.run(schedule, checkpoints, heldOut, {
      onStep: (r) => {
        finalLoss = r.loss;
        const { task_losses: taskLosses, ...record } = r;
        metrics.append({ ...record, ...prefixed("loss", taskLosses ?? {}) });
        progress.update({ step: r.step, loss: r.loss, lr: r.lr, tokensPerS: r.tokens_per_s });
      },
      onEval: (step): Record<string, number> => {
        const acc = accuracy();
        if (step === t.steps) accuracyAfter = acc;
        return { ...(acc === undefined ? {} : { eval_accuracy: acc }), ...taskMetrics(scoreEvalTasks()) };
      },
      onEvalRecord: (r) => {
        metrics.append(r as { step: number });
        say(`step ${r.step}: ${formatMetrics(r)}`);
      },
    });
    progress.stop();
    metrics.close();

    const saved = adapter ? path.join(out, "adapter") : path.join(out, "model");
    if (adapter) saveAdapter(adapter, saved);
    else saveFullModel(model, config.model, saved);
    const records = readMetrics(path.join(out, METRICS_FILE));
    const summary: RunSummary = {
      final_loss: finalLoss, steps: t.steps, trainable_params: trainable, wall_s: (performance.now() - started) / 1000,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024, tasks: tasks.map((x) => x.name),
    };
    writeFileAtomic(path.join(out, SUMMARY_FILE), `${JSON.stringify(summary, null, 2)}\n`);
    const reportFile = path.join(out, "report.html");
    writeReport(reportFile, {
      title: `tasktune ${config.method} run: ${path.basename(config.model)} on ${tasks.map((x) => x.name).join(", ")}`,
      config,
      metrics: records,
      tables: [
        ...(accuracyBefore !== undefined && accuracyAfter !== undefined ? [accuracyTable(config, accuracyBefore, accuracyAfter)] : []),
        ...(evalTasks ? [beforeAfterTable(records, t.steps)] : []),
      ],
      notes: [`${trainable.toLocaleString("en-US")} trainable parameters; saved to ${saved}`],
    });
    return { outputDir: out, finalLoss, accuracyBefore, accuracyAfter, reportFile, summary };
  } finally {
    progress.stop();
    scorer?.free();
    trainer.free();
    adapter?.free();
    model.free();
    backend.close();
  }
}

/** A model of the folder's config.json with fresh weights, for pretraining. */
function freshModel(backend: Backend, dir: string, seed: number): Model {
  const model = createModel(backend, loadConfig(dir));
  model.initialize(seed);
  return model;
}

/** metrics.jsonl keys "<prefix>/<name>". */
function prefixed(prefix: string, values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([name, v]) => [`${prefix}/${name}`, v]));
}

function formatMetrics(record: Record<string, number>): string {
  return Object.entries(record).filter(([k]) => k !== "step").map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", ");
}

/** Evaluation task results as metrics.jsonl keys "eval_<metric>/<task>". */
function taskMetrics(results: readonly TaskResult[]): Record<string, number> {
  return Object.fromEntries(results.flatMap((r) => Object.entries(r.metrics).map(([metric, v]) => [`eval_${metric}/${r.task}`, v.value])));
}

/** Each evaluation task's metrics before training (step 0) and after the last step. */
function beforeAfterTable(records: readonly MetricsRecord[], lastStep: number): ReportTable {
  const before = records.find((r) => r.step === 0) ?? { step: 0 };
  const after = records.filter((r) => r.step === lastStep).reduce<Record<string, number>>((all, r) => ({ ...all, ...r }), {});
  const keys = Object.keys(before).filter((k) => k.startsWith("eval_") && k.includes("/"));
  return {
    title: "Evaluation tasks before and after training",
    columns: ["task", "metric", "before", "after", "change"],
    rows: keys.map((key) => {
      const [metric, task] = [key.slice(5, key.indexOf("/")), key.slice(key.indexOf("/") + 1)];
      return [task, metric, before[key]!, after[key] ?? null, after[key] === undefined ? null : after[key]! - before[key]!];
    }),
  };
}

function accuracyTable(config: TrainConfig, before: number, after: number): ReportTable {
  return {
    title: `Task accuracy (${path.basename(config.eval!.file)})`,
    columns: ["model", "accuracy"],
    rows: [["before training", before], [`after ${config.train.steps} steps`, after]],
  };
}

/** Multiple-choice items from prompt/completion rows whose completion is one of the choices. */
function taskItems(task: NonNullable<TrainConfig["eval"]>, tokenizer: Tokenizer): MultipleChoiceItem[] {
  const choices = task.choices.map((c) => tokenizer.encode(c, { addSpecialTokens: false }));
  const rows = readRows(task.file).slice(0, task.limit);
  return rows.map(({ line, values }) => {
    const answer = task.choices.indexOf(String(values.completion));
    if (typeof values.prompt !== "string" || answer < 0) {
      throw new FormatError(`${task.file}:${line}`, `needs a "prompt" and a "completion" that is one of ${JSON.stringify(task.choices)}`);
    }
    return { context: tokenizer.encode(values.prompt), choices, answer };
  });
}

/** A full fine-tune as a Hugging Face checkpoint: weights, config.json and tokenizer files. */
function saveFullModel(model: Model, sourceDir: string, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const writer = new ShardedSafetensorsWriter(dir, { maxShardBytes: 2e9 });
  try {
    for (const name of model.parameterNames) {
      const t = model.param(name);
      writer.add(name, "F32", t.torchShape, t.getF32());
    }
    writer.finish();
  } catch (err) {
    writer.abort();
    throw err;
  }
  for (const file of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"]) {
    if (fs.existsSync(path.join(sourceDir, file))) fs.copyFileSync(path.join(sourceDir, file), path.join(dir, file));
  }
}
