import { seededUniform } from "../engine/random.ts";

/** A permutation of 0..n-1 by Fisher-Yates over seededUniform: the same seed gives the same order. */
export function shuffledIndices(n: number, seed: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const uniform = seededUniform(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}
