// What every generator family shares: the generator interface, and lists of random items with a
// validated length range.
import { z } from "zod";

/** One JSONL row: prompt/completion (or text) plus fields for scoring and analysis. */
export type SyntheticRow = Record<string, string | number | boolean | number[]>;

export interface SyntheticTask<Options = unknown> {
  description: string;
  /** Strict (an unknown key is an error naming it), with a default for every key. */
  options: z.ZodType<Options>;
  /** Every possible completion, so that accuracy can be scored by log-likelihood; absent where the answer is generated. */
  choices?: readonly string[];
  /** A source of rows drawn from `random`: each call returns the next row. */
  rows(options: Options, random: () => number): () => SyntheticRow;
}

export const DIGIT_CHOICES = Array.from({ length: 10 }, (_, d) => ` ${d}`);

/** The keys of a lookup table, as the values of an option (`z.enum`). */
export function keysOf<K extends string>(table: Record<K, unknown>): [K, ...K[]] {
  return Object.keys(table) as [K, ...K[]];
}

/** Uniform integer in [lo, hi]. */
export function randomInt(random: () => number, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

/** A list of min..max items (the length drawn first, then each item). */
export function randomList<T>(random: () => number, min: number, max: number, item: () => T): T[] {
  return Array.from({ length: randomInt(random, min, max) }, item);
}

export function digitList(random: () => number, min: number, max: number): number[] {
  return randomList(random, min, max, () => randomInt(random, 0, 9));
}

/** The list-length keys of an options schema; pair with `checkLengths`. */
export function lengthOptions(min: number, max: number, fewest = 1) {
  return {
    min_length: z.number().int().min(fewest).max(64).default(min).describe("fewest list items"),
    max_length: z.number().int().min(fewest).max(64).default(max).describe("most list items"),
  };
}

/** `schema` with max_length checked against min_length (the error names max_length). */
export function checkLengths<S extends z.ZodType<{ min_length: number; max_length: number }>>(schema: S): S {
  return schema.refine((o) => o.min_length <= o.max_length, { path: ["max_length"], message: "must be at least min_length" });
}
