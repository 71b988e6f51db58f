import type { Tokenizer } from "../io/tokenizer.ts";
import { IGNORE_INDEX } from "../models/model.ts";
import { truncatedCount, type BatchMode } from "./batches.ts";
import { encodeRows, type EncodedRows, type Example, type RowShape } from "./examples.ts";
import { readRows } from "./records.ts";
import { holdOut } from "./split.ts";

/** Where evaluation examples come from: a seeded hold-out of the training file's rows, or a file of their own. */
export type EvalSource = { fraction: number; seed: number } | { file: string };

export interface DatasetOptions {
  /** Row length of the training graph; with mode, it decides which examples count as truncated. */
  seqLen: number;
  mode: BatchMode;
  eval?: EvalSource;
}

export interface DatasetStats {
  shape: RowShape;
  rows: number;
  tokens: number;
  /** Tokens the loss is taken on (labels not IGNORE_INDEX). */
  trainedTokens: number;
  /** Examples longer than seqLen in pad mode, which lose their end. */
  truncated: number;
}

export interface Dataset {
  train: Example[];
  /** Empty without an eval source. */
  eval: Example[];
  stats: { train: DatasetStats; eval: DatasetStats | undefined };
}

/** Reads and tokenizes a .jsonl or .csv training file (and its eval source); see encodeRows for the row shapes. */
export function loadDataset(file: string, tokenizer: Tokenizer, { seqLen, mode, eval: evalSource }: DatasetOptions): Dataset {
  const load = (path: string): EncodedRows => encodeRows(path, readRows(path), tokenizer);
  const stats = ({ shape, examples }: EncodedRows): DatasetStats => ({
    shape,
    rows: examples.length,
    tokens: examples.reduce((total, example) => total + example.ids.length, 0),
    trainedTokens: examples.reduce((total, example) => total + example.labels.filter((label) => label !== IGNORE_INDEX).length, 0),
    truncated: truncatedCount(examples, seqLen, mode),
  });

  const { train, eval: held } = splitFor(load(file), evalSource, load);
  return { train: train.examples, eval: held?.examples ?? [], stats: { train: stats(train), eval: held && stats(held) } };
}

function splitFor(train: EncodedRows, source: EvalSource | undefined, load: (path: string) => EncodedRows): { train: EncodedRows; eval?: EncodedRows } {
  if (source === undefined) return { train };
  if ("file" in source) return { train, eval: load(source.file) };
  const split = holdOut(train.examples, source.fraction, source.seed);
  return { train: { shape: train.shape, examples: split.train }, eval: { shape: train.shape, examples: split.eval } };
}
