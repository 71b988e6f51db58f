// Building blocks of merge methods as ggml graph ops (sign election, disjoint mean, masks,
// weighted sums, norm rescaling), plus the two pieces ggml has no practical op for: the top-k
// magnitude threshold (selected in JS) and random drop masks (drawn in JS from a seeded RNG).
import type { Graph } from "../engine/graph.ts";
import { seededUniform } from "../engine/random.ts";
import type { Tensor } from "../engine/tensor.ts";

/** 1 where x > 0, else 0: sgn(relu(x)), so no extra ggml binding is needed for ggml_step. */
export function step(g: Graph, x: Tensor): Tensor {
  return g.sgn(g.relu(x));
}

/** 1 where x >= c, else 0 (c a finite constant): 1 - step(c - x), exact since c - x rounds to 0 only when equal. */
export function atLeast(g: Graph, x: Tensor, c: number): Tensor {
  return g.scaleBias(step(g, g.scaleBias(x, -1, c)), -1, 1);
}

/** x where x != 0 else 1 (a safe divisor for counts and weight sums that may be 0). */
export function oneIfZero(g: Graph, x: Tensor): Tensor {
  return g.add(x, g.scaleBias(g.sgn(g.abs(x)), -1, 1));
}

/** Σ w_i t_i (weights of 1 skip the scale). */
export function weightedSum(g: Graph, tensors: readonly Tensor[], weights: readonly number[]): Tensor {
  if (tensors.length === 0) throw new Error("weightedSum: no tensors");
  let acc: Tensor | undefined;
  tensors.forEach((t, i) => {
    const w = weights[i]!;
    const term = w === 1 ? t : g.scale(t, w);
    acc = acc ? g.add(acc, term) : term;
  });
  return acc!;
}

export function sumAll(g: Graph, tensors: readonly Tensor[]): Tensor {
  return tensors.slice(1).reduce((acc, t) => g.add(acc, t), tensors[0]!);
}

export type ConsensusMethod = "sum" | "count";

/**
 * TIES sign election: for each tensor, 1 where its sign agrees with the elected sign, else 0
 * (zeros never agree). "sum" elects the sign of Σ x_i (mergekit's sum, PEFT's "total");
 * "count" the sign of Σ sgn(x_i) (PEFT's "frequency"); a tie elects +.
 */
export function signAgreement(g: Graph, tensors: readonly Tensor[], method: ConsensusMethod): Tensor[] {
  const signs = tensors.map((t) => g.sgn(t));
  const total = sumAll(g, method === "sum" ? tensors : signs);
  const elected = g.scaleBias(step(g, g.neg(total)), -2, 1); // +1 where total >= 0, else -1
  return signs.map((s) => step(g, g.mul(s, elected)));
}

/** Keeps the entries of t whose magnitude is among the top k: |t| >= cut, with cut from kthLargest. */
export function keepAtLeast(g: Graph, t: Tensor, cut: number): Tensor {
  if (cut === Infinity) return g.scale(t, 0);
  if (cut <= 0) return t;
  return g.mul(t, atLeast(g, g.abs(t), cut));
}

// ---------------------------------------------------------------------------------------------
// Host-side pieces

/**
 * The k-th largest value (k >= 1) of `values`, which is reordered in place. ggml's only
 * selection ops (ggml_top_k, ggml_argsort) sort each row on one thread (O(n log n) over a
 * whole flattened tensor) and give indices that ggml cannot scatter back into a mask, so the
 * threshold is an O(n) quickselect here and the mask itself is a ggml op (keepAtLeast).
 */
export function kthLargest(values: Float32Array, k: number): number {
  if (!Number.isInteger(k) || k < 1 || k > values.length) throw new RangeError(`k must be in [1, ${values.length}], got ${k}`);
  return selectAscending(values, values.length - k);
}

/** The value at ascending rank `index` (0-based) of `a`, reordering it in place (Hoare quickselect). */
export function selectAscending(a: Float32Array, index: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const mid = lo + ((hi - lo) >>> 1);
    // median of three as the pivot
    let x = a[lo]!, y = a[mid]!, z = a[hi]!;
    if (x > y) [x, y] = [y, x];
    if (y > z) [y, z] = [z, y];
    if (x > y) [x, y] = [y, x];
    const pivot = y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const tmp = a[i]!;
        a[i] = a[j]!;
        a[j] = tmp;
        i++;
        j--;
      }
    }
    // [lo, j] <= pivot <= [i, hi]; anything strictly between equals the pivot
    if (index <= j) hi = j;
    else if (index >= i) lo = i;
    else return a[index]!;
  }
  return a[index]!;
}

/**
 * mergekit's rescaled_masked_tensor factor for the L1 norm: ||t||_1 / ||masked||_1, or 1 when
 * either is below eps (the norms come from ggml reductions or the host-side magnitudes).
 */
export function l1RescaleFactor(before: number, after: number, eps = 1e-7): number {
  return before < eps || after < eps ? 1 : before / after;
}

/** The magnitude cut that keeps the top int(density * n) entries (PEFT and mergekit's k). */
export function magnitudeCut(magnitudes: Float32Array, density: number): number {
  if (density >= 1) return 0;
  const k = Math.trunc(density * magnitudes.length);
  return k === 0 ? Infinity : kthLargest(magnitudes, k);
}

/** FNV-1a of a string: a stable 32-bit seed for (run seed, tensor, model). */
export function hashSeed(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const ch of parts.join("\u0000")) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * A Bernoulli(density) keep mask (1 kept, 0 dropped), from seededUniform. ggml has no random
 * number op, so drop masks are drawn here and multiplied in by the graph.
 */
export function bernoulliMask(n: number, density: number, seed: number): Uint8Array {
  const uniform = seededUniform(seed);
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = uniform() < density ? 1 : 0;
  return mask;
}
