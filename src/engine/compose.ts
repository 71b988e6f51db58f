// Functions ggml computes forward but cannot differentiate (GELU, LayerNorm, label-indexed
// cross-entropy), composed from ops that have a backward pass. test/compose.test.ts checks each
// against a float64 reference and its gradient by finite differences.
import type { Graph } from "./graph.ts";
import type { Tensor } from "./tensor.ts";

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * sigmoid(z) as exp(-softplus(-z)): softplus is linear past 20, so neither the value nor the
 * gradient overflows for large |z| (the plain 1/(1+exp(-z)) gives NaN gradients past |z| ~ 80).
 */
export function sigmoid(g: Graph, z: Tensor): Tensor {
  return g.exp(g.neg(g.softplus(g.neg(z))));
}

/** tanh(x) = 2 sigmoid(2x) - 1 (ggml's tanh has no backward; BERT's pooler needs one). */
export function tanh(g: Graph, x: Tensor): Tensor {
  return g.scaleBias(sigmoid(g, g.scale(x, 2)), 2, -1);
}

/** GELU, tanh approximation (GPT-2's gelu_new): x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3). */
export function geluTanh(g: Graph, x: Tensor): Tensor {
  const cube = g.mul(g.sqr(x), x);
  const z = g.scale(g.add(x, g.scale(cube, 0.044715)), 2 * SQRT_2_OVER_PI);
  return g.mul(x, sigmoid(g, z));
}

// Abramowitz & Stegun 7.1.26: erf(a) = 1 - poly(t) exp(-a^2), t = 1 / (1 + p a), a >= 0,
// absolute error below 1.5e-7, well inside float32 parity with PyTorch's exact erf GELU.
const ERF_P = 0.3275911;
const ERF_A = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];

/**
 * GELU with the exact normal CDF (BERT's "gelu"): x * Phi(x), Phi(x) = 0.5 (1 + sgn(x) (1 - q)),
 * q = poly(t) exp(-x^2/2) with a = |x|/sqrt(2). sgn has a zero gradient, so the composition's
 * derivative is the derivative of the approximation everywhere but x = 0, where x * Phi'(x) = 0
 * anyway.
 */
export function geluErf(g: Graph, x: Tensor): Tensor {
  const a = g.scale(g.abs(x), Math.SQRT1_2);
  const t = g.exp(g.neg(g.log(g.scaleBias(a, ERF_P, 1))));
  let poly = g.scale(t, ERF_A[4]);
  for (let i = 3; i >= 0; i--) poly = g.mul(g.scaleBias(poly, 1, ERF_A[i]), t);
  const q = g.mul(poly, g.exp(g.neg(g.sqr(a))));
  const sign = g.sgn(x);
  const phi = g.scaleBias(g.sub(sign, g.mul(sign, q)), 0.5, 0.5);
  return g.mul(x, phi);
}

/**
 * LayerNorm over ne[0] without affine terms (ggml_norm has no backward): mean and variance from
 * sum_rows, broadcast back with explicit repeats (ggml's broadcast sub/div backward is wrong).
 */
export function layerNorm(g: Graph, x: Tensor, eps: number): Tensor {
  const n = x.ne[0];
  const mean = g.scale(g.sumRows(x), 1 / n);
  const centered = g.sub(x, g.repeat(mean, x));
  const variance = g.scale(g.sumRows(g.sqr(centered)), 1 / n);
  const std = g.sqrt(g.scaleBias(variance, 1, eps));
  return g.div(centered, g.repeat(std, x));
}

/** LayerNorm with its learned scale and shift, as torch.nn.LayerNorm. */
export function layerNormAffine(g: Graph, x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  return g.add(g.mul(layerNorm(g, x, eps), weight), bias);
}

/**
 * Inputs of crossEntropy: for logits [C, N] and labels[N] (ignoreIndex skipped), the flat index
 * of each label's probability in the [C * N] softmax, and each position's weight in the mean.
 */
export function crossEntropyTargets(labels: ArrayLike<number>, classes: number, ignoreIndex = -100): { indices: Int32Array; weights: Float32Array } {
  const n = labels.length;
  const indices = new Int32Array(n);
  const weights = new Float32Array(n);
  let valid = 0;
  for (let i = 0; i < n; i++) if (labels[i] !== ignoreIndex) valid++;
  for (let i = 0; i < n; i++) {
    const label = labels[i];
    if (label === ignoreIndex) {
      indices[i] = i * classes;
      continue;
    }
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw new Error(`label ${label} at position ${i} is outside [0, ${classes}) and is not the ignore index ${ignoreIndex}`);
    }
    indices[i] = i * classes + label;
    weights[i] = 1 / valid;
  }
  return { indices, weights };
}

/**
 * log p(target) at each position of logits [C, N] (ne order), without dense one-hot targets:
 * softmax, then gather each target's probability by flat index (i32 [N], position * C + target),
 * then log. Positions whose `used` entry is 0 read log(1) = 0, so that an underflowed
 * probability at an ignored position cannot turn a sum into NaN.
 */
export function tokenLogProbs(g: Graph, logits: Tensor, indices: Tensor, used: Tensor): Tensor {
  const [classes, n] = logits.ne;
  if (logits.ne[2] !== 1 || logits.ne[3] !== 1) throw new Error(`tokenLogProbs: logits must be [classes, positions], got [${logits.ne.join(", ")}]`);
  if (indices.elements !== n || used.elements !== n) {
    throw new Error(`tokenLogProbs: ${n} positions but ${indices.elements} indices and ${used.elements} mask entries`);
  }
  const probs = g.reshape(g.softMax(logits, null), [1, classes * n]);
  const picked = g.reshape(g.getRows(probs, g.reshape(indices, [n])), [n]);
  const mask = g.reshape(used, [n]);
  return g.log(g.add(g.mul(picked, mask), g.scaleBias(mask, -1, 1)));
}

/** Mean cross-entropy: -sum(w * log p(label)) with weights from crossEntropyTargets. */
export function crossEntropy(g: Graph, logits: Tensor, indices: Tensor, weights: Tensor): Tensor {
  const w = g.reshape(weights, [weights.elements]);
  return g.scale(g.sum(g.mul(tokenLogProbs(g, logits, indices, g.sgn(w)), w)), -1);
}
