// Multi-task batches (METHODS.md C1): each row of a batch comes from one task, drawn with the
// task's mixing rate; within a task, rows run through its examples epoch after epoch exactly as a
// single-task BatchSchedule does. Rates follow T5/mT0/OPT-IML: examples-proportional (with an
// optional per-task cap, T5's "limit K"), temperature-scaled (rate ∝ size^(1/T)), equal, or explicit weights.
import { seededUniform } from "../engine/random.ts";
import { BatchBuilder, BatchSchedule, type ScheduledBatch, type ScheduleOptions } from "./batches.ts";
import type { Example } from "./examples.ts";

export type MixingStrategy = "proportional" | "temperature" | "equal" | "weights";

export interface MixtureTask {
  name: string;
  examples: readonly Example[];
  /** Relative weight under the "weights" strategy. */
  weight?: number;
  /** Counts the task as at most this many examples under "proportional" and "temperature". */
  cap?: number;
}

export interface MixingOptions {
  strategy: MixingStrategy;
  /** Temperature T of the "temperature" strategy: 1 is proportional, larger flattens towards equal. */
  temperature?: number;
}

/** Each task's probability of filling a row; they sum to 1. */
export function mixingRates(tasks: readonly Pick<MixtureTask, "examples" | "weight" | "cap">[], { strategy, temperature = 1 }: MixingOptions): number[] {
  if (tasks.length === 0) throw new RangeError("no tasks to mix");
  if (!(temperature > 0)) throw new RangeError(`temperature must be positive, got ${temperature}`);
  const sizes = tasks.map((t) => Math.min(t.examples.length, t.cap ?? Infinity));
  const total = sizes.reduce((a, b) => a + b, 0);
  const raw = strategy === "proportional" ? sizes
    : strategy === "temperature" ? sizes.map((n) => (n / total) ** (1 / temperature))
    : strategy === "equal" ? sizes.map(() => 1)
    : tasks.map((t) => t.weight ?? 1);
  const sum = raw.reduce((a, b) => a + b, 0);
  if (!(sum > 0)) throw new RangeError(`mixing rates are all zero under "${strategy}"`);
  return raw.map((r) => r / sum);
}

/** A scheduled batch with the task of each row. */
export interface MixtureBatch extends ScheduledBatch {
  rowTasks: Int32Array;
}

/**
 * Endless multi-task batches addressed by step, like BatchSchedule: the task of every row comes
 * from one seeded stream drawn in row order, so batchAt(k) is the same batch whether or not the
 * run was resumed. Task t's rows use seed + t * 7919, so a single task gives BatchSchedule's batches.
 */
export class MixtureSchedule {
  readonly rates: number[];
  private readonly schedules: BatchSchedule[];
  private readonly draw: () => number;
  /** Task, and the row's index among that task's rows, of every row drawn so far. */
  private readonly rowTask: number[] = [];
  private readonly rowWithinTask: number[] = [];
  private readonly drawn: number[];

  constructor(readonly tasks: readonly MixtureTask[], private readonly options: ScheduleOptions & MixingOptions) {
    this.rates = mixingRates(tasks, options);
    this.schedules = tasks.map((task, t) => {
      try {
        return new BatchSchedule(task.examples, { ...options, seed: options.seed + t * 7919 });
      } catch (err) {
        throw new RangeError(`task ${task.name}: ${(err as Error).message}`);
      }
    });
    this.draw = seededUniform(options.seed ^ 0x6d1e7a5c);
    this.drawn = tasks.map(() => 0);
  }

  private taskOfRow(row: number): [number, number] {
    while (this.rowTask.length <= row) {
      const u = this.draw();
      let task = 0;
      for (let acc = this.rates[0]; task < this.rates.length - 1 && u >= acc; acc += this.rates[++task]);
      this.rowTask.push(task);
      this.rowWithinTask.push(this.drawn[task]++);
    }
    return [this.rowTask[row], this.rowWithinTask[row]];
  }

  batchAt(step: number): MixtureBatch {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
    const { batchSize } = this.options;
    const builder = new BatchBuilder(this.options);
    const rowTasks = new Int32Array(batchSize);
    for (let at = 0; at < batchSize; at++) {
      const [task, row] = this.taskOfRow(step * batchSize + at);
      this.schedules[task].writeRow(builder, at, row);
      rowTasks[at] = task;
    }
    const rowsPerEpoch = this.schedules.reduce((total, s) => total + s.rowsPerEpoch, 0);
    return { ...builder.finish(), rowTasks, step, epoch: ((step + 1) * batchSize) / rowsPerEpoch };
  }
}
