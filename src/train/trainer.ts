// The training loop: one ggml graph (forward, HF loss, backward into persistent accumulators)
// allocated once and reused every micro-batch, AdamW as its own graph, checkpoints that a crashed
// run resumes from to the same result.
import fs from "node:fs";
import path from "node:path";
import type { LoraAdapter } from "../adapters/lora.ts";
import { Graph } from "../engine/graph.ts";
import type { HostArray, Tensor } from "../engine/tensor.ts";
import { openSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { Batch, LossOptions, Model } from "../models/model.ts";
import { AdamW, ADAMW_DEFAULTS, type AdamWOptions, type NamedParam } from "./optimizer.ts";
import { learningRate, type ScheduleKind } from "./schedule.ts";

export interface TrainOptions extends AdamWOptions {
  steps: number;
  batchSize: number;
  gradAccum: number;
  seqLen: number;
  lr: number;
  warmup: number;
  schedule: ScheduleKind;
  seed: number;
  /** Evaluate every N optimizer steps (0: only at the end). */
  evalEvery: number;
  /** Checkpoint every N optimizer steps (0: never). */
  saveEvery: number;
  /** Checkpoints kept on disk; older ones are deleted. */
  keepCheckpoints: number;
  /** Task names of a multi-task run (batches give each row's task index); one unnamed task by default. */
  tasks?: string[];
  /** How the training loss averages over tokens, samples and tasks (evaluation always takes the token mean). */
  loss?: Omit<LossOptions, "tasks">;
}

export const TRAIN_DEFAULTS: Omit<TrainOptions, "steps" | "batchSize" | "seqLen" | "lr"> = {
  ...ADAMW_DEFAULTS, gradAccum: 1, warmup: 0, schedule: "linear", seed: 42, evalEvery: 0, saveEvery: 0, keepCheckpoints: 2,
};

/** One micro-batch: token ids and the (unshifted) labels the loss is computed on. */
export interface LabeledBatch {
  batch: Batch;
  labels: Int32Array;
  /** Task index of each row in a multi-task run (-1: a padding row). */
  rowTasks?: Int32Array;
  /** Tokens that carry loss, for throughput. */
  tokens: number;
}

/** Held-out batches of one task, evaluated at eval steps. */
export interface EvalSet {
  name: string;
  batches: LabeledBatch[];
}

/** Training data addressed by micro-batch index, so that a resumed run sees the same batches. */
export interface BatchSource {
  batchAt(index: number): LabeledBatch;
}

export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  elapsed_s: number;
  /** Mean loss of each task over the step's micro-batches that held it (multi-task runs). */
  task_losses?: Record<string, number>;
}

export interface TrainHooks {
  onStep?(record: StepRecord): void;
  /** Runs at eval steps; returns metrics to log (eval_loss is added by the trainer). */
  onEval?(step: number): Record<string, number> | void;
  onEvalRecord?(record: Record<string, number>): void;
  onCheckpoint?(step: number, dir: string): void;
}

export class NonFiniteLossError extends Error {}

export class Trainer {
  private readonly graph: Graph;
  private readonly loss: Tensor;
  private readonly taskLosses: Tensor;
  private readonly inputs: [Tensor, (batch: LabeledBatch) => HostArray][];
  private readonly optimizer: AdamW;
  private readonly evalGraph: Graph;
  private readonly evalLoss: Tensor;
  private readonly evalInputs: [Tensor, (batch: LabeledBatch) => HostArray][];
  step = 0;

  constructor(
    readonly model: Model,
    readonly params: NamedParam[],
    readonly options: TrainOptions,
    readonly adapter?: LoraAdapter,
  ) {
    if (params.length === 0) throw new Error("nothing to train: no trainable tensors");
    for (const p of params) model.backend.ggml.ggml_set_param(p.tensor.ptr);
    this.optimizer = new AdamW(model.backend, params, options);
    if (adapter) adapter.training = true;
    ({ graph: this.graph, loss: this.loss, taskLosses: this.taskLosses, inputs: this.inputs } = this.build(true));
    if (adapter) adapter.training = false;
    ({ graph: this.evalGraph, loss: this.evalLoss, inputs: this.evalInputs } = this.build(false));
  }

  private build(training: boolean) {
    const { model, options } = this;
    const graph = new Graph(model.backend, { grads: training, maxNodes: model.graphNodes });
    const { logits, inputs } = model.forward(graph, options.batchSize, options.seqLen);
    const lossOptions: LossOptions = training ? { ...options.loss, tasks: options.tasks?.length ?? 1 } : {};
    const { loss, taskLosses, targets } = model.buildLoss(graph, logits, options.batchSize, options.seqLen, lossOptions);
    graph.output(loss);
    graph.output(taskLosses);
    // One micro-batch a step: the backward pass overwrites the accumulators, so none are zeroed.
    if (training) graph.backward(loss, (p) => this.optimizer.accumulatorOf(p), { accumulate: options.gradAccum > 1 });
    graph.allocate();
    const all: [Tensor, (b: LabeledBatch) => HostArray][] = [
      ...inputs.values.map(([t, fill]): [Tensor, (b: LabeledBatch) => HostArray] => [t, (b) => fill(b.batch)]),
      ...targets.map(([t, fill]): [Tensor, (b: LabeledBatch) => HostArray] => [t, (b) => fill(training ? b : { labels: b.labels })]),
      ...(this.adapter?.inputsOf(graph) ?? []).map(([t, fill]): [Tensor, (b: LabeledBatch) => HostArray] => [t, () => fill()]),
    ];
    return { graph, loss, taskLosses, inputs: all };
  }

  private computeLoss(graph: Graph, loss: Tensor, inputs: typeof this.inputs, batch: LabeledBatch): number {
    for (const [t, fill] of inputs) t.setAll(fill(batch));
    graph.compute();
    return loss.getF32()[0];
  }

  /** One optimizer step over gradAccum micro-batches; returns the logged record. */
  trainStep(data: BatchSource, started: number): StepRecord {
    const { gradAccum, seed } = this.options;
    const t0 = performance.now();
    if (gradAccum > 1) this.optimizer.zeroGrad();
    this.adapter?.refreshDoraNorms();
    let lossSum = 0;
    let tokens = 0;
    const tasks = this.options.tasks ?? [];
    const taskSums = new Float64Array(tasks.length);
    const taskCounts = new Float64Array(tasks.length);
    for (let micro = 0; micro < gradAccum; micro++) {
      const index = this.step * gradAccum + micro;
      this.adapter?.setDropoutStep(seed, index);
      const batch = data.batchAt(index);
      const loss = this.computeLoss(this.graph, this.loss, this.inputs, batch);
      if (!Number.isFinite(loss)) {
        throw new NonFiniteLossError(`loss is ${loss} at step ${this.step + 1} (micro-batch ${micro}): training stopped; lower the learning rate or check the data`);
      }
      lossSum += loss;
      tokens += batch.tokens;
      if (tasks.length > 1 && batch.rowTasks) {
        const perTask = this.taskLosses.getF32();
        for (const task of new Set(batch.rowTasks)) {
          if (task < 0) continue;
          taskSums[task] += perTask[task];
          taskCounts[task]++;
        }
      }
    }
    const lr = learningRate(this.options.schedule, this.options.lr, this.step, this.options.warmup, this.options.steps);
    const gradNorm = this.optimizer.step(lr, gradAccum);
    if (!Number.isFinite(gradNorm)) throw new NonFiniteLossError(`gradient norm is ${gradNorm} at step ${this.step + 1}: training stopped`);
    this.step++;
    const seconds = (performance.now() - t0) / 1000;
    const record: StepRecord = { step: this.step, loss: lossSum / gradAccum, lr, grad_norm: gradNorm, tokens_per_s: tokens / seconds, elapsed_s: (performance.now() - started) / 1000 };
    if (tasks.length > 1) {
      record.task_losses = Object.fromEntries(tasks.flatMap((name, t) => (taskCounts[t] ? [[name, taskSums[t] / taskCounts[t]]] : [])));
    }
    return record;
  }

  /** Mean loss over eval batches, weighted by their loss-carrying tokens. */
  evaluate(batches: LabeledBatch[]): number {
    this.adapter?.refreshDoraNorms();
    let sum = 0;
    let weight = 0;
    for (const b of batches) {
      sum += this.computeLoss(this.evalGraph, this.evalLoss, this.evalInputs, b) * b.tokens;
      weight += b.tokens;
    }
    return sum / weight;
  }

  /**
   * Token-mean loss over every eval set's batches as eval_loss and, with several sets (the tasks of
   * a multi-task run), each set's own as eval_loss/<name>.
   */
  heldOutLosses(evalSets: EvalSet[]): Record<string, number> {
    const withData = evalSets.filter((set) => set.batches.length);
    if (!withData.length) return {};
    let sum = 0;
    let tokens = 0;
    const perSet: Record<string, number> = {};
    for (const { name, batches } of withData) {
      const loss = this.evaluate(batches);
      const n = batches.reduce((total, b) => total + b.tokens, 0);
      sum += loss * n;
      tokens += n;
      perSet[`eval_loss/${name}`] = loss;
    }
    return { eval_loss: sum / tokens, ...(evalSets.length > 1 ? perSet : {}) };
  }

  /** Trains from the current step to options.steps. */
  run(data: BatchSource, checkpointDir: string | undefined, evalSets: EvalSet[], hooks: TrainHooks = {}): void {
    const { steps, evalEvery, saveEvery } = this.options;
    const started = performance.now();
    while (this.step < steps) {
      const record = this.trainStep(data, started);
      hooks.onStep?.(record);
      const last = this.step === steps;
      if ((evalEvery > 0 && this.step % evalEvery === 0) || last) {
        const metrics: Record<string, number> = { step: this.step };
        Object.assign(metrics, this.heldOutLosses(evalSets));
        Object.assign(metrics, hooks.onEval?.(this.step) ?? {});
        if (Object.keys(metrics).length > 1) hooks.onEvalRecord?.(metrics);
      }
      if (checkpointDir && ((saveEvery > 0 && this.step % saveEvery === 0) || last)) {
        const saved = this.saveCheckpoint(checkpointDir);
        hooks.onCheckpoint?.(this.step, saved);
      }
    }
  }

  /** Writes trainable tensors, AdamW moments and the step into checkpoints/step-N, atomically. */
  saveCheckpoint(root: string): string {
    const final = path.join(root, `step-${String(this.step).padStart(6, "0")}`);
    const temp = `${final}.tmp-${process.pid}`;
    fs.rmSync(temp, { recursive: true, force: true });
    fs.mkdirSync(temp, { recursive: true });
    const tensors = [
      ...this.params.map((p) => ({ name: p.name, tensor: p.tensor })),
      ...this.optimizer.state.map(([name, tensor]) => ({ name, tensor })),
    ].map(({ name, tensor }) => ({ name, dtype: "F32" as const, shape: tensor.torchShape, data: tensor.getF32() }));
    writeSafetensors(path.join(temp, "state.safetensors"), tensors);
    fs.writeFileSync(path.join(temp, "trainer.json"), `${JSON.stringify({ step: this.step, optimizerSteps: this.optimizer.stepCount, options: this.options }, null, 2)}\n`);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(temp, final);
    pruneCheckpoints(root, this.options.keepCheckpoints);
    return final;
  }

  /** Restores a checkpoint written by saveCheckpoint (same trainable tensors and options). */
  loadCheckpoint(dir: string): void {
    const state = JSON.parse(fs.readFileSync(path.join(dir, "trainer.json"), "utf8")) as { step: number; optimizerSteps: number; options: TrainOptions };
    for (const key of ["batchSize", "gradAccum", "seqLen", "seed", "tasks", "loss"] as const) {
      const [then, now] = [JSON.stringify(state.options[key]), JSON.stringify(this.options[key])];
      if (then !== now) throw new Error(`${dir}: checkpoint was made with ${key} = ${then}, this run has ${now}; resuming would not reproduce the run`);
    }
    const file = openSafetensors(path.join(dir, "state.safetensors"));
    try {
      for (const [name, tensor] of [...this.params.map((p): [string, Tensor] => [p.name, p.tensor]), ...this.optimizer.state]) {
        if (!file.tensors.has(name)) throw new Error(`${file.path}: checkpoint lacks ${name}`);
        tensor.setAll(file.readF32(name));
      }
    } finally {
      file.close();
    }
    this.step = state.step;
    this.optimizer.stepCount = state.optimizerSteps;
  }

  free(): void {
    this.graph.free();
    this.evalGraph.free();
    this.optimizer.free();
  }
}

/** The newest complete checkpoint under root, if any (temp folders of a crashed save are ignored). */
export function latestCheckpoint(root: string): string | undefined {
  if (!fs.existsSync(root)) return undefined;
  const names = fs.readdirSync(root).filter((n) => /^step-\d+$/.test(n)).sort();
  return names.length ? path.join(root, names[names.length - 1]) : undefined;
}

function pruneCheckpoints(root: string, keep: number): void {
  const names = fs.readdirSync(root).filter((n) => /^step-\d+$/.test(n)).sort();
  for (const name of names.slice(0, Math.max(0, names.length - keep))) fs.rmSync(path.join(root, name), { recursive: true, force: true });
}
