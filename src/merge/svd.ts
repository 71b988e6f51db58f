// Truncated SVD for the *_svd adapter merges. ggml has no SVD (nor QR or eigen solvers), so this
// is JS in float64: block subspace iteration (randomized range finder, Halko et al. 2011, §4.5)
// with Rayleigh-Ritz on the block and a cyclic Jacobi eigensolver for the small k x k problem.
//
// With a block of k = rank + oversampling columns, an A whose rank is at most k (the plain `svd`
// combination of LoRA deltas has rank <= the sum of the adapters' ranks) is exact after one
// iteration; otherwise the block converges at the rate (sigma_{k+1} / sigma_rank)^2 per iteration
// and iterates until every kept singular triplet has a residual ||A v - sigma u|| below
// tol * sigma_1. Cost per iteration: 2 m n k multiply-adds.
import { seededNormal } from "../engine/random.ts";

export interface SvdResult {
  /** m x rank, row-major: left singular vectors. */
  u: Float64Array;
  /** rank singular values, descending. */
  s: Float64Array;
  /** rank x n, row-major: right singular vectors (V^T). */
  vt: Float64Array;
  iterations: number;
  converged: boolean;
  /** Largest relative residual ||A v_j - s_j u_j|| / s_1 over the kept triplets. */
  residual: number;
}

export interface SvdOptions {
  seed?: number;
  tol?: number;
  maxIterations?: number;
  oversampling?: number;
}

/** Top-`rank` singular triplets of the row-major m x n matrix `a`. */
export function truncatedSvd(a: Float32Array | Float64Array, m: number, n: number, rank: number, options: SvdOptions = {}): SvdResult {
  if (a.length !== m * n) throw new Error(`truncatedSvd: ${a.length} values for a ${m} x ${n} matrix`);
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(m, n)) throw new Error(`truncatedSvd: rank ${rank} must be in [1, min(${m}, ${n})]`);
  const tol = options.tol ?? 1e-7;
  const maxIterations = options.maxIterations ?? 300;
  const k = Math.min(Math.min(m, n), rank + (options.oversampling ?? Math.max(10, rank)));

  const normal = seededNormal(options.seed ?? 0x5eed);
  const start = Array.from({ length: k }, () => Float64Array.from({ length: n }, () => normal()));
  let q = orthonormalize(multiply(a, m, n, start));
  let best: SvdResult | undefined;
  for (let iteration = 1; iteration <= maxIterations; iteration++) {
    const z = multiplyTransposed(a, m, n, q); // columns of A^T Q (B = Q^T A = Z^T)
    const { values, vectors } = symmetricEigen(gram(z), k);
    const y = multiply(a, m, n, z); // A Z, the next block and the residual's A v
    const order = values.map((_, i) => i).sort((i, j) => values[j]! - values[i]!);
    const sigma = order.map((i) => Math.sqrt(Math.max(values[i]!, 0)));
    const top = sigma[0]!;
    const u = new Float64Array(m * rank);
    const s = new Float64Array(rank);
    const vt = new Float64Array(rank * n);
    let residual = 0;
    for (let j = 0; j < rank; j++) {
      const w = vectors[order[j]!]!;
      const sj = sigma[j]!;
      s[j] = sj;
      // u_j = Q w_j; v_j = Z w_j / s_j; A v_j = Y w_j / s_j
      const uj = combine(q, w, m);
      for (let i = 0; i < m; i++) u[i * rank + j] = uj[i]!;
      if (sj <= top * 1e-12 || sj === 0) continue; // a null direction: its u s v^T is 0 whatever v is
      const vj = combine(z, w, n);
      for (let i = 0; i < n; i++) vt[j * n + i] = vj[i]! / sj;
      const avj = combine(y, w, m);
      let r2 = 0;
      for (let i = 0; i < m; i++) {
        const d = avj[i]! / sj - sj * uj[i]!;
        r2 += d * d;
      }
      residual = Math.max(residual, Math.sqrt(r2) / top);
    }
    best = { u, s, vt, iterations: iteration, converged: residual <= tol || top === 0, residual };
    if (best.converged) return best;
    q = orthonormalize(y);
  }
  return best!;
}

/** A X for row-major A (m x n) and X given as k columns of length n. */
function multiply(a: Float32Array | Float64Array, m: number, n: number, cols: Float64Array[]): Float64Array[] {
  const out = cols.map(() => new Float64Array(m));
  for (let i = 0; i < m; i++) {
    const row = i * n;
    for (let c = 0; c < cols.length; c++) {
      const x = cols[c]!;
      let acc = 0;
      for (let j = 0; j < n; j++) acc += a[row + j]! * x[j]!;
      out[c]![i] = acc;
    }
  }
  return out;
}

/** A^T Y for row-major A (m x n) and Y given as k columns of length m. */
function multiplyTransposed(a: Float32Array | Float64Array, m: number, n: number, cols: Float64Array[]): Float64Array[] {
  const out = cols.map(() => new Float64Array(n));
  for (let i = 0; i < m; i++) {
    const row = i * n;
    for (let c = 0; c < cols.length; c++) {
      const yi = cols[c]![i]!;
      if (yi === 0) continue;
      const o = out[c]!;
      for (let j = 0; j < n; j++) o[j] += yi * a[row + j]!;
    }
  }
  return out;
}

/** Z^T Z as a dense k x k row-major matrix. */
function gram(cols: Float64Array[]): Float64Array {
  const k = cols.length;
  const g = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = i; j < k; j++) {
      const a = cols[i]!, b = cols[j]!;
      let acc = 0;
      for (let t = 0; t < a.length; t++) acc += a[t]! * b[t]!;
      g[i * k + j] = acc;
      g[j * k + i] = acc;
    }
  }
  return g;
}

/** Σ_c w_c cols_c. */
function combine(cols: Float64Array[], w: Float64Array, length: number): Float64Array {
  const out = new Float64Array(length);
  for (let c = 0; c < cols.length; c++) {
    const wc = w[c]!;
    if (wc === 0) continue;
    const col = cols[c]!;
    for (let i = 0; i < length; i++) out[i] += wc * col[i]!;
  }
  return out;
}

/**
 * Modified Gram-Schmidt, applied twice ("twice is enough"); a column that vanishes (the block
 * exceeds the matrix's rank) becomes zero and stays out of the span.
 */
function orthonormalize(cols: Float64Array[]): Float64Array[] {
  const out: Float64Array[] = [];
  for (const col of cols) {
    const v = Float64Array.from(col);
    const before = Math.sqrt(dot(v, v));
    for (let pass = 0; pass < 2; pass++) {
      for (const u of out) {
        const p = dot(u, v);
        if (p !== 0) for (let i = 0; i < v.length; i++) v[i] -= p * u[i]!;
      }
    }
    const norm = Math.sqrt(dot(v, v));
    if (norm <= before * 1e-10 || norm === 0) v.fill(0);
    else for (let i = 0; i < v.length; i++) v[i] /= norm;
    out.push(v);
  }
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc += a[i]! * b[i]!;
  return acc;
}

/** Eigen-decomposition of a symmetric k x k matrix by cyclic Jacobi rotations; vectors as columns w_i. */
export function symmetricEigen(matrix: Float64Array, k: number): { values: number[]; vectors: Float64Array[] } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(k * k);
  for (let i = 0; i < k; i++) v[i * k + i] = 1;
  const scale = Math.sqrt(a.reduce((s, x) => s + x * x, 0));
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < k; p++) for (let q = p + 1; q < k; q++) off += a[p * k + q]! ** 2;
    if (Math.sqrt(off) <= 1e-15 * scale || scale === 0) break;
    for (let p = 0; p < k; p++) {
      for (let q = p + 1; q < k; q++) {
        const apq = a[p * k + q]!;
        if (apq === 0) continue;
        const app = a[p * k + p]!, aqq = a[q * k + q]!;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < k; r++) {
          const arp = a[r * k + p]!, arq = a[r * k + q]!;
          a[r * k + p] = c * arp - s * arq;
          a[r * k + q] = s * arp + c * arq;
        }
        for (let r = 0; r < k; r++) {
          const apr = a[p * k + r]!, aqr = a[q * k + r]!;
          a[p * k + r] = c * apr - s * aqr;
          a[q * k + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < k; r++) {
          const vrp = v[r * k + p]!, vrq = v[r * k + q]!;
          v[r * k + p] = c * vrp - s * vrq;
          v[r * k + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const values = Array.from({ length: k }, (_, i) => a[i * k + i]!);
  const vectors = Array.from({ length: k }, (_, i) => Float64Array.from({ length: k }, (_, r) => v[r * k + i]!));
  return { values, vectors };
}
