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
 * How a batch's token losses are averaged. `token`: the mean over all loss-carrying tokens (the
 * Hugging Face loss). `sample`: each row (sample) weighs the same, whatever its length. `task`:
 * each task present in the batch weighs the same (MFTCoder's task balancing), so a task with long
 * answers cannot drown one with short answers.
 */
export type LossBalance = "token" | "sample" | "task";

export interface LossTargetOptions {
  classes: number;
  /** Positions per batch row: seqLen for a causal LM, 1 for sequence classification. */
  rowLength: number;
  /** Task index of each row (all 0 when omitted); a negative index marks a row without loss. */
  rowTasks?: ArrayLike<number>;
  tasks?: number;
  balance?: LossBalance;
  ignoreIndex?: number;
}

/**
 * Inputs of crossEntropy for logits [C, N] and labels[N] (ignoreIndex skipped): the flat index of
 * each label's probability in the [C * N] softmax, which positions carry loss, each task's weights
 * over the positions (ggml [N, tasks]: the task's own average) and each task's share of the loss.
 */
export function crossEntropyTargets(labels: ArrayLike<number>, options: LossTargetOptions): { indices: Int32Array; used: Float32Array; segments: Float32Array; taskWeights: Float32Array } {
  const { classes, rowLength, rowTasks, tasks = 1, balance = "token", ignoreIndex = -100 } = options;
  const n = labels.length;
  if (n % rowLength !== 0) throw new Error(`${n} labels do not fill rows of ${rowLength}`);
  const rows = n / rowLength;
  if (rowTasks && rowTasks.length !== rows) throw new Error(`${rowTasks.length} row tasks for ${rows} rows`);
  const taskOf = (row: number) => (rowTasks ? rowTasks[row] : 0);
  const indices = new Int32Array(n);
  const used = new Float32Array(n);
  const rowTokens = new Float64Array(rows);
  for (let i = 0; i < n; i++) {
    const label = labels[i];
    const task = taskOf(Math.floor(i / rowLength));
    indices[i] = i * classes;
    if (label === ignoreIndex || task < 0) continue;
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw new Error(`label ${label} at position ${i} is outside [0, ${classes}) and is not the ignore index ${ignoreIndex}`);
    }
    if (!Number.isInteger(task) || task >= tasks) throw new Error(`row ${Math.floor(i / rowLength)} has task ${task}, expected one of 0..${tasks - 1}`);
    indices[i] += label;
    used[i] = 1;
    rowTokens[Math.floor(i / rowLength)]++;
  }
  // Per task: loss-carrying tokens and rows with any.
  const taskTokens = new Float64Array(tasks);
  const taskRows = new Float64Array(tasks);
  for (let row = 0; row < rows; row++) {
    if (rowTokens[row] === 0) continue;
    taskTokens[taskOf(row)] += rowTokens[row];
    taskRows[taskOf(row)]++;
  }
  const segments = new Float32Array(n * tasks);
  for (let i = 0; i < n; i++) {
    if (!used[i]) continue;
    const row = Math.floor(i / rowLength);
    const task = taskOf(row);
    segments[task * n + i] = balance === "sample" ? 1 / (taskRows[task] * rowTokens[row]) : 1 / taskTokens[task];
  }
  const share = balance === "token" ? taskTokens : balance === "sample" ? taskRows : taskTokens.map((t) => (t > 0 ? 1 : 0));
  const total = share.reduce((a, b) => a + b, 0);
  const taskWeights = Float32Array.from(share, (s) => (total > 0 ? s / total : 0));
  return { indices, used, segments, taskWeights };
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

/** The graph inputs of crossEntropy, filled from crossEntropyTargets. */
export interface CrossEntropyInputs {
  indices: Tensor;
  used: Tensor;
  segments: Tensor;
  taskWeights: Tensor;
}

/**
 * Cross-entropy averaged per task, then over tasks: L_t = -sum_i segments[i, t] * log p_i, and
 * loss = sum_t taskWeights[t] * (1 - exp(-L_t))^focalGamma * L_t. With one task and token
 * weights this is the Hugging Face mean. focalGamma > 0 is MFTCoder's focal-style balancing: a
 * task the model already predicts well (high mean-token probability exp(-L_t)) counts less; the
 * factor is part of the loss, so its gradient flows as in focal loss.
 */
export function crossEntropy(g: Graph, logits: Tensor, inputs: CrossEntropyInputs, focalGamma = 0): { loss: Tensor; taskLosses: Tensor } {
  const n = logits.ne[1];
  const tasks = inputs.taskWeights.elements;
  if (inputs.segments.elements !== n * tasks) throw new Error(`crossEntropy: segments must be [${n}, ${tasks}], got ${inputs.segments.elements} elements`);
  const logProbs = g.reshape(tokenLogProbs(g, logits, inputs.indices, inputs.used), [n, 1]);
  const taskLosses = g.scale(g.mulMat(g.reshape(inputs.segments, [n, tasks]), logProbs), -1);
  const weights = g.reshape(inputs.taskWeights, [tasks, 1]);
  if (focalGamma === 0) return { loss: g.sum(g.mul(taskLosses, weights)), taskLosses };
  // (1 - P)^gamma as exp(gamma * log(1 - P + eps)): eps keeps an absent task (L = 0, P = 1) finite; its weight is 0.
  const easy = g.exp(g.scale(g.log(g.scaleBias(g.exp(g.scale(taskLosses, -1)), -1, 1 + 1e-6)), focalGamma));
  return { loss: g.sum(g.mul(g.mul(easy, taskLosses), weights)), taskLosses };
}
