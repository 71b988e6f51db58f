import type { Tokenizer } from "../io/tokenizer.ts";
import { IGNORE_INDEX, type Batch } from "../models/model.ts";
import type { Example } from "./examples.ts";
import { shuffledIndices } from "./shuffle.ts";

/**
 * How examples become [batchSize, seqLen] rows. `pad`: one example per row, cut at seqLen
 * (the end is dropped, as transformers truncates on the right) and padded. `pack`: examples,
 * EOS-separated, concatenated into one stream cut every seqLen tokens, so there is no padding;
 * like the default packing of transformers/TRL without position-id resets, tokens attend across
 * example boundaries within a row.
 */
export type BatchMode = "pad" | "pack";

export interface BatchOptions {
  batchSize: number;
  seqLen: number;
  mode: BatchMode;
  /** Fills padding positions; see batchingTokenIds. */
  padId: number;
  /** Separates packed examples; without one they abut. */
  eosId: number | undefined;
}

export interface ScheduleOptions extends BatchOptions {
  /** Epoch e is shuffled with seed + e. */
  seed: number;
}

export interface TrainingBatch {
  batch: Batch;
  /**
   * [batchSize, seqLen] like batch.inputIds and unshifted: the model shifts them inside its causal
   * LM loss, as transformers does. IGNORE_INDEX on padding and untrained tokens.
   */
  labels: Int32Array;
  /** Non-padding tokens in the batch. */
  tokens: number;
}

export interface ScheduledBatch extends TrainingBatch {
  step: number;
  /** Passes over the data completed by the end of this batch (fractional, as transformers logs epochs). */
  epoch: number;
}

/** The tokenizer's pad token, else EOS (as TRL falls back), else 0; and EOS to separate packed examples. */
export function batchingTokenIds(tokenizer: Tokenizer): { padId: number; eosId: number | undefined } {
  return { padId: tokenizer.padId ?? tokenizer.eosId ?? 0, eosId: tokenizer.eosId };
}

/** Examples that lose tokens to the row length, for the trainer to warn about. Packing splits examples across rows but drops nothing. */
export function truncatedCount(examples: readonly Example[], seqLen: number, mode: BatchMode): number {
  return mode === "pad" ? examples.filter((example) => example.ids.length > seqLen).length : 0;
}

/**
 * Endless training batches. Rows run on from one epoch into the next (each epoch a fresh shuffle),
 * so every batch is full and no example is dropped; batch k is rows [k * batchSize, (k + 1) *
 * batchSize) of that sequence, which makes batchAt(k) exactly the k-th batch of an uninterrupted
 * run, for resuming.
 */
export class BatchSchedule {
  /** Rows one pass over the examples fills; fractional when packing. */
  readonly rowsPerEpoch: number;
  /** Writes row `row` of the endless sequence into batch row `at`. */
  readonly writeRow: (builder: BatchBuilder, at: number, row: number) => void;

  constructor(examples: readonly Example[], private readonly options: ScheduleOptions) {
    checkOptions(examples, options);
    const { seqLen, seed, eosId } = options;
    const n = examples.length;
    if (options.mode === "pad") {
      const orderOf = lastEpochMemo((epoch) => shuffledIndices(n, seed + epoch));
      this.rowsPerEpoch = n;
      this.writeRow = (builder, at, row) => builder.writeExample(at, examples[orderOf(Math.floor(row / n))[row % n]]);
    } else {
      const streamOf = lastEpochMemo((epoch) => packedStream(examples, shuffledIndices(n, seed + epoch), eosId));
      const tokensPerEpoch = packedLength(examples, eosId);
      this.rowsPerEpoch = tokensPerEpoch / seqLen;
      this.writeRow = (builder, at, row) => {
        for (let column = 0; column < seqLen; ) {
          const position = row * seqLen + column;
          const epoch = Math.floor(position / tokensPerEpoch);
          const offset = position - epoch * tokensPerEpoch;
          const count = Math.min(seqLen - column, tokensPerEpoch - offset);
          builder.write(at, column, streamOf(epoch), offset, count);
          column += count;
        }
      };
    }
  }

  /** Optimizer steps that `epochs` passes over the data take, the last batch rounded up. */
  stepsForEpochs(epochs: number): number {
    return Math.ceil((epochs * this.rowsPerEpoch) / this.options.batchSize);
  }

  batchAt(step: number): ScheduledBatch {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
    const { batchSize } = this.options;
    const builder = new BatchBuilder(this.options);
    for (let at = 0; at < batchSize; at++) this.writeRow(builder, at, step * batchSize + at);
    return { ...builder.finish(), step, epoch: ((step + 1) * batchSize) / this.rowsPerEpoch };
  }

  *stream(fromStep = 0): Generator<ScheduledBatch, never> {
    for (let step = fromStep; ; step++) yield this.batchAt(step);
  }
}

/** Endless training batches from step `startStep` on (0 by default): see BatchSchedule. */
export function batchStream(examples: readonly Example[], options: ScheduleOptions & { startStep?: number }): Generator<ScheduledBatch, never> {
  return new BatchSchedule(examples, options).stream(options.startStep);
}

/**
 * One pass over the examples in order, for evaluation: each example once (cut at seqLen in pad
 * mode, as in training). Rows after the last example are padding, so the final batch keeps the
 * graph's shape.
 */
export function* evalBatches(examples: readonly Example[], options: BatchOptions): Generator<TrainingBatch> {
  checkOptions(examples, options);
  const { batchSize, seqLen, mode } = options;
  const stream = mode === "pack" ? packedStream(examples, examples.map((_, i) => i), options.eosId) : undefined;
  const rows = stream ? Math.ceil(stream.ids.length / seqLen) : examples.length;
  for (let first = 0; first < rows; first += batchSize) {
    const builder = new BatchBuilder(options);
    for (let at = 0; at < batchSize && first + at < rows; at++) {
      const row = first + at;
      if (stream) builder.write(at, 0, stream, row * seqLen, Math.min(seqLen, stream.ids.length - row * seqLen));
      else builder.writeExample(at, examples[row]);
    }
    yield builder.finish();
  }
}

/** The arrays of one batch, all padding until rows are written. */
export class BatchBuilder {
  private readonly inputIds: Int32Array;
  private readonly attentionMask: Int32Array;
  private readonly labels: Int32Array;
  private tokens = 0;

  constructor(private readonly options: BatchOptions) {
    const size = options.batchSize * options.seqLen;
    this.inputIds = new Int32Array(size).fill(options.padId);
    this.attentionMask = new Int32Array(size);
    this.labels = new Int32Array(size).fill(IGNORE_INDEX);
  }

  /** Copies `count` tokens of `source` from `from` into row `row` at `column`. */
  write(row: number, column: number, source: Example, from: number, count: number): void {
    const at = row * this.options.seqLen + column;
    this.inputIds.set(source.ids.subarray(from, from + count), at);
    this.labels.set(source.labels.subarray(from, from + count), at);
    this.attentionMask.fill(1, at, at + count);
    this.tokens += count;
  }

  writeExample(row: number, example: Example): void {
    this.write(row, 0, example, 0, Math.min(example.ids.length, this.options.seqLen));
  }

  finish(): TrainingBatch {
    const { batchSize, seqLen } = this.options;
    return { batch: { batchSize, seqLen, inputIds: this.inputIds, attentionMask: this.attentionMask }, labels: this.labels, tokens: this.tokens };
  }
}

/** EOS goes after an example in a packed stream unless it already ends with one. */
function separatorAfter(example: Example, eosId: number | undefined): number | undefined {
  return example.ids.at(-1) === eosId ? undefined : eosId;
}

function packedLength(examples: readonly Example[], eosId: number | undefined): number {
  return examples.reduce((total, example) => total + example.ids.length + (separatorAfter(example, eosId) === undefined ? 0 : 1), 0);
}

/** The examples in `order` as one Example, each followed by EOS where it lacks one. */
function packedStream(examples: readonly Example[], order: ArrayLike<number>, eosId: number | undefined): Example {
  const length = packedLength(examples, eosId);
  const stream: Example = { ids: new Int32Array(length), labels: new Int32Array(length) };
  let at = 0;
  for (let i = 0; i < order.length; i++) {
    const example = examples[order[i]];
    stream.ids.set(example.ids, at);
    stream.labels.set(example.labels, at);
    at += example.ids.length;
    const separator = separatorAfter(example, eosId);
    if (separator !== undefined) {
      stream.ids[at] = separator;
      // Trained when the example's own last token is: stopping after a reply is worth learning,
      // predicting EOS from an untrained tail (a prompt, a user turn) is not.
      stream.labels[at] = example.labels.at(-1) === IGNORE_INDEX ? IGNORE_INDEX : separator;
      at++;
    }
  }
  return stream;
}

/** Remembers the value for the last epoch asked for: batches walk forward through epochs, so one is enough. */
function lastEpochMemo<T>(compute: (epoch: number) => T): (epoch: number) => T {
  let cached: { epoch: number; value: T } | undefined;
  return (epoch) => {
    if (cached?.epoch !== epoch) cached = { epoch, value: compute(epoch) };
    return cached.value;
  };
}

function checkOptions(examples: readonly Example[], { batchSize, seqLen, mode, padId }: BatchOptions): void {
  if (examples.length === 0) throw new RangeError("no examples to batch");
  if (mode !== "pad" && mode !== "pack") throw new RangeError(`mode must be "pad" or "pack", got ${JSON.stringify(mode)}`);
  for (const [name, value] of [["batchSize", batchSize], ["seqLen", seqLen]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (!Number.isInteger(padId) || padId < 0) throw new RangeError(`padId must be a non-negative integer, got ${padId}`);
}
