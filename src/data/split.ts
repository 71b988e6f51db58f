import { shuffledIndices } from "./shuffle.ts";

/**
 * Holds out ceil(fraction * n) items, chosen by a seeded shuffle, for evaluation (as datasets'
 * train_test_split sizes its test split); both parts keep the items' original order.
 */
export function holdOut<T>(items: readonly T[], fraction: number, seed: number): { train: T[]; eval: T[] } {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`the eval fraction must be between 0 and 1 (exclusive), got ${fraction}`);
  // 0.3 * 10 is 3.0000000000000004 in floating point, which must not round up to 4.
  const evalCount = Math.ceil(fraction * items.length - 1e-9);
  if (evalCount >= items.length) {
    throw new RangeError(`holding out ${fraction} of ${items.length} rows for evaluation leaves none for training`);
  }
  const held = new Set(shuffledIndices(items.length, seed).subarray(0, evalCount));
  return {
    train: items.filter((_, i) => !held.has(i)),
    eval: items.filter((_, i) => held.has(i)),
  };
}
