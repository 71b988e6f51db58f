import { test } from "node:test";
import assert from "node:assert/strict";
import { crossEntropy, crossEntropyTargets, type LossBalance, geluErf, geluTanh, layerNorm, tanh } from "../src/engine/compose.ts";
import { gradCheck } from "./support/gradcheck.ts";
import { seededUniform } from "../src/engine/random.ts";
import { testBackend } from "./support/backend.ts";

/** erf in float64 from the all-positive series 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1} / (2n+1)!!. */
function erf64(x: number): number {
  const a = Math.abs(x);
  if (a > 6) return Math.sign(x);
  let term = a;
  let sum = a;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * a * a) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
}

const geluTanh64 = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const geluErf64 = (x: number) => 0.5 * x * (1 + erf64(x / Math.SQRT2));

/** Dense grid over [-50, 50] plus the sensitive region near 0. */
function wideRange(): Float64Array {
  const xs: number[] = [];
  for (let x = -50; x <= 50; x += 0.37) xs.push(x);
  for (let x = -4; x <= 4; x += 0.013) xs.push(x);
  xs.push(0, 1e-6, -1e-6, 50, -50);
  return Float64Array.from(xs);
}

test("erf64 reference matches known values", () => {
  assert.ok(Math.abs(erf64(0.5) - 0.5204998778130465) < 1e-15);
  assert.ok(Math.abs(erf64(2) - 0.9953222650189527) < 1e-15);
  assert.ok(Math.abs(erf64(-1) + 0.8427007929497149) < 1e-15);
});

for (const [name, fn, ref] of [["geluTanh", geluTanh, geluTanh64], ["geluErf", geluErf, geluErf64], ["tanh", tanh, Math.tanh]] as const) {
  test(`${name}: value and gradient match float64 finite differences over [-50, 50]`, async () => {
    const x = wideRange();
    const r = gradCheck(await testBackend(), {
      ne: [x.length],
      x,
      build: (g, t) => ({ out: fn(g, t) }),
      reference: (v) => v.map(ref),
    });
    assert.ok(r.maxValueError < 1e-5, `value error ${r.maxValueError}`);
    assert.ok(r.maxGradError < 1e-4, `gradient error ${r.maxGradError}`);
  });
}

function layerNorm64(x: Float64Array, n: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let row = 0; row < x.length / n; row++) {
    const v = x.subarray(row * n, row * n + n);
    const mean = v.reduce((a, b) => a + b, 0) / n;
    const variance = v.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
    for (let i = 0; i < n; i++) out[row * n + i] = (v[i] - mean) / Math.sqrt(variance + eps);
  }
  return out;
}

test("layerNorm: value and gradient match float64 finite differences, including large inputs", async () => {
  const random = seededUniform(1);
  const n = 16;
  const rows = 6;
  const x = Float64Array.from({ length: n * rows }, (_, i) => (random() - 0.5) * (i < n * 3 ? 4 : 100) + (i >= n * 5 ? 50 : 0));
  const r = gradCheck(await testBackend(), {
    ne: [n, rows],
    x,
    build: (g, t) => ({ out: layerNorm(g, t, 1e-5) }),
    reference: (v) => layerNorm64(v, n, 1e-5),
  });
  assert.ok(r.maxValueError < 1e-5, `value error ${r.maxValueError}`);
  assert.ok(r.maxGradError < 1e-3, `gradient error ${r.maxGradError}`);
});

/** Float64 reference of the task-balanced loss, written from its definition rather than from the segments. */
function balancedCrossEntropy64(x: Float64Array, classes: number, labels: number[], rowLength: number, rowTasks: number[], balance: LossBalance, gamma: number): Float64Array {
  const nll = labels.map((label, i) => {
    const row = Array.from(x.subarray(i * classes, (i + 1) * classes));
    const max = Math.max(...row);
    return max + Math.log(row.reduce((a, b) => a + Math.exp(b - max), 0)) - row[label];
  });
  const tasks = new Map<number, { tokens: number[]; rows: number[][] }>();
  rowTasks.forEach((task, row) => {
    const tokens = nll.slice(row * rowLength, (row + 1) * rowLength).filter((_, t) => labels[row * rowLength + t] !== -100);
    if (task < 0 || tokens.length === 0) return;
    const entry = tasks.get(task) ?? { tokens: [], rows: [] };
    entry.tokens.push(...tokens);
    entry.rows.push(tokens);
    tasks.set(task, entry);
  });
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const all = [...tasks.values()];
  const shares = all.map((t) => (balance === "token" ? t.tokens.length : balance === "sample" ? t.rows.length : 1));
  const total = shares.reduce((a, b) => a + b, 0);
  let loss = 0;
  all.forEach((t, k) => {
    const taskLoss = balance === "sample" ? mean(t.rows.map(mean)) : mean(t.tokens);
    loss += (shares[k] / total) * (1 - Math.exp(-taskLoss)) ** gamma * taskLoss;
  });
  return Float64Array.of(loss);
}

const BALANCE_CASES: { balance: LossBalance; gamma: number; rowTasks: number[] }[] = [
  { balance: "token", gamma: 0, rowTasks: [0, 0, 0] },
  { balance: "token", gamma: 0, rowTasks: [1, 0, 1] },
  { balance: "sample", gamma: 0, rowTasks: [1, 0, 1] },
  { balance: "task", gamma: 0, rowTasks: [1, 0, 1] },
  { balance: "task", gamma: 2, rowTasks: [1, 0, -1] },
  { balance: "sample", gamma: 0.5, rowTasks: [2, 0, 2] },
];

for (const { balance, gamma, rowTasks } of BALANCE_CASES) {
  test(`crossEntropy: ${balance} balance, focal gamma ${gamma}, row tasks [${rowTasks}]: loss and gradient match float64`, async () => {
    const random = seededUniform(3);
    const classes = 37;
    const rowLength = 3;
    const labels = [3, -100, 0, 36, 12, -100, 5, 9, 1];
    const x = Float64Array.from({ length: classes * labels.length }, () => (random() - 0.5) * 20);
    const tasks = 3;
    const targets = crossEntropyTargets(labels, { classes, rowLength, rowTasks, tasks, balance });
    const r = gradCheck(await testBackend(), {
      ne: [classes, labels.length],
      x,
      build: (g, t) => {
        const inputs = {
          indices: g.input("i32", [labels.length], "indices"),
          used: g.input("f32", [labels.length], "used"),
          segments: g.input("f32", [labels.length, tasks], "segments"),
          taskWeights: g.input("f32", [tasks], "task weights"),
        };
        const { loss } = crossEntropy(g, t, inputs, gamma);
        return { out: loss, inputs: (Object.keys(inputs) as (keyof typeof inputs)[]).map((k) => [inputs[k], targets[k]]) };
      },
      reference: (v) => balancedCrossEntropy64(v, classes, labels, rowLength, rowTasks, balance, gamma),
    });
    assert.ok(r.maxValueError < 1e-5, `value error ${r.maxValueError}`);
    assert.ok(r.maxGradError < 1e-4, `gradient error ${r.maxGradError}`);
  });
}

test("crossEntropyTargets rejects labels outside the classes", () => {
  assert.throws(() => crossEntropyTargets([0, 7], { classes: 5, rowLength: 1 }), /label 7 at position 1/);
  assert.throws(() => crossEntropyTargets([0, 1], { classes: 5, rowLength: 1, rowTasks: [0, 2], tasks: 2 }), /row 1 has task 2/);
});
