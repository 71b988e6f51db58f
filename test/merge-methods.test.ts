// Merge methods one tensor at a time (mergeTensor): mergekit's semantics against reference outputs
// of mergekit's own tensor code (test/fixtures/merge/generate.py.txt), DARE's expectation and
// seeding, the host-side selection, and the truncated SVD.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { openSafetensors } from "../src/io/safetensors.ts";
import { getMergeMethod, mergeMethodNames, mergeTensor, type TensorInput } from "../src/merge/index.ts";
import { kthLargest, selectAscending } from "../src/merge/ops.ts";
import { evaluateSetting, gradientPosition, depthPosition } from "../src/merge/params.ts";
import { truncatedSvd } from "../src/merge/svd.ts";
import { seededNormal } from "../src/engine/random.ts";
import { testBackend } from "./support/backend.ts";

const ref = openSafetensors(path.join(import.meta.dirname, "fixtures", "merge", "merge-reference.safetensors"));
const read = (name: string) => ref.readF32(name);
const f32 = (data: Float32Array): TensorInput => ({ data, dtype: "F32" });
const base = read("base");
const models = [0, 1, 2].map((i) => read(`model${i}`));
const SHAPE = ref.info("base").shape;
const W = [0.6, 0.9, -0.3], D = [0.5, 0.7, 0.3], G = [0.1, 0.05, 0.2];

interface MergeOptions {
  params?: Record<string, number | boolean>[];
  global?: Record<string, number | boolean>;
  base?: Float32Array;
  models?: Float32Array[];
  shape?: readonly number[];
  seed?: number;
  chunkElements?: number;
}

async function merge(method: string, o: MergeOptions = {}) {
  const m = getMergeMethod(method);
  const inputs = o.models ?? models;
  const defaults = (defs: typeof m.parameters, given: Record<string, number | boolean> = {}) =>
    Object.fromEntries(defs.map((d) => [d.name, given[d.name] ?? d.default!]));
  const bytes = mergeTensor(await testBackend(), m, {
    name: "model.layers.0.mlp.up_proj.weight",
    shape: o.shape ?? SHAPE,
    base: m.needsBase ? f32(o.base ?? base) : undefined,
    models: inputs.map(f32),
    params: inputs.map((_, i) => defaults(m.tensorParameters, o.params?.[i])),
    global: defaults(m.parameters, o.global),
    seed: o.seed,
    outDtype: "F32",
  }, { chunkElements: o.chunkElements });
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** max |a - b| relative to max |b|. */
function scaledError(a: Float32Array, b: Float32Array): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

const perModel = (extra: (i: number) => Record<string, number>) => W.map((w, i) => ({ weight: w, ...extra(i) }));

const CASES: [string, string, MergeOptions][] = [
  ["linear", "linear", { params: perModel(() => ({})) }],
  ["linear_raw", "linear", { params: perModel(() => ({})), global: { normalize: false } }],
  ["task_arithmetic", "task_arithmetic", { params: perModel((i) => ({ density: D[i]! })), global: { lambda: 0.8 } }],
  ["ties", "ties", { params: perModel((i) => ({ density: D[i]! })) }],
  ["ties_rescale", "ties", { params: perModel((i) => ({ density: D[i]! })), global: { rescale: true } }],
  ["ties_unnormalized", "ties", { params: perModel((i) => ({ density: D[i]! })), global: { normalize: false } }],
  ["breadcrumbs", "breadcrumbs", { params: perModel((i) => ({ density: D[i]!, gamma: G[i]! })) }],
  ["breadcrumbs_ties", "breadcrumbs_ties", { params: perModel((i) => ({ density: D[i]!, gamma: G[i]! })) }],
  ["dare_ties_d1", "dare_ties", { params: perModel(() => ({ density: 1 })) }],
  ["slerp", "slerp", { models: [models[0]!], global: { t: 0.3 } }],
  ["slerp_far", "slerp", { base: models[1], models: [models[2]!], global: { t: 0.7 } }],
  ["model_stock", "model_stock", {}],
  ["model_stock_filter_wise", "model_stock", { global: { filter_wise: true } }],
  ["model_stock_vec", "model_stock", { base: read("vec"), models: [0, 1, 2].map((i) => read(`vec_model${i}`)), shape: [40], global: { filter_wise: true } }],
];

for (const [expected, method, options] of CASES) {
  test(`${method} matches mergekit (${expected})`, async () => {
    const err = scaledError(await merge(method, options), read(expected));
    assert.ok(err < 1e-5, `${expected}: error ${err}`);
  });
}

test("merging in chunks of rows gives the whole-tensor result (statistics gathered over all chunks)", async () => {
  for (const [expected, method, options] of [...CASES, ["dare", "dare_ties", { params: perModel((i) => ({ density: D[i]! })), seed: 3 }] as const]) {
    if (options.shape?.length === 1) continue;
    const whole = await merge(method, options);
    // 5 rows of 40 per chunk: 24 rows make chunks of 5, 5, 5, 5 and 4 (two graph sizes)
    const chunked = await merge(method, { ...options, chunkElements: 200 });
    assert.ok(scaledError(chunked, whole) < 1e-6, `${expected}: chunked differs by ${scaledError(chunked, whole)}`);
  }
});

test("slerp of nearly colinear tensors falls back to lerp, as mergekit does", async () => {
  const near = base.map((v) => v * 1.0001);
  const err = scaledError(await merge("slerp", { models: [near], global: { t: 0.3 } }), read("slerp_lerp"));
  assert.ok(err < 1e-6, `error ${err}`);
});

test("every registered method merges a tensor; the registry names the known methods on a typo", async () => {
  assert.deepEqual(mergeMethodNames().sort(), ["breadcrumbs", "breadcrumbs_ties", "dare_linear", "dare_ties", "lines", "linear",
    "magnitude_prune", "model_stock", "slerp", "task_arithmetic", "ties"].sort());
  for (const name of mergeMethodNames()) {
    const m = getMergeMethod(name);
    const count = m.maxModels ?? 3;
    const out = await merge(name, {
      models: models.slice(0, count),
      params: W.slice(0, count).map((w, i) => ({ weight: w, density: D[i]! })),
      global: { t: 0.5, alpha: 0.5, beta: 1 },
    });
    assert.equal(out.length, base.length);
    assert.ok(out.every(Number.isFinite), name);
  }
  assert.throws(() => getMergeMethod("tie"), /unknown merge_method "tie" \(known: .*ties/);
});

test("magnitude_prune keeps the top int(density * n) magnitudes of each task vector (PEFT's merge_utils)", async () => {
  const out = await merge("magnitude_prune", { params: W.map((w, i) => ({ weight: w, density: D[i]! })) });
  const expected = new Float32Array(base.length);
  models.forEach((m, i) => {
    const delta = m.map((v, j) => v - base[j]!);
    const k = Math.trunc(D[i]! * delta.length);
    const order = [...delta.keys()].sort((a, b) => Math.abs(delta[b]!) - Math.abs(delta[a]!)).slice(0, k);
    for (const j of order) expected[j] += W[i]! * delta[j]!;
  });
  const want = expected.map((v, j) => base[j]! + v);
  assert.ok(scaledError(out, want) < 1e-6);
});

test("lines scales the task-arithmetic vector by alpha + (beta - alpha) * depth", async () => {
  const m = getMergeMethod("lines");
  const inputs = models.slice(0, 2);
  const run = async (depth: number) => {
    const bytes = mergeTensor(await testBackend(), m, {
      name: "x", shape: SHAPE, base: f32(base), models: inputs.map(f32), params: [{ weight: 1, density: 1 }, { weight: 0.5, density: 1 }],
      global: { alpha: 0.2, beta: 0.8, lambda: 1, normalize: false, rescale: false, int8_mask: false }, depth, outDtype: "F32",
    });
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  };
  for (const depth of [0, 0.5, 1]) {
    const scale = 0.2 + 0.6 * depth;
    const want = base.map((b, j) => b + scale * ((inputs[0]![j]! - b) + 0.5 * (inputs[1]![j]! - b)));
    assert.ok(scaledError(await run(depth), want) < 1e-6, `depth ${depth}`);
  }
});

test("DARE: the mean over seeds converges to the undropped merge; a seed reproduces its output", async () => {
  const density = 0.3;
  const params = W.map((w) => ({ weight: w, density }));
  const undropped = await merge("task_arithmetic", { params: W.map((w) => ({ weight: w })) });
  const runs = 200;
  const mean = new Float64Array(base.length);
  let single = 0;
  for (let s = 0; s < runs; s++) {
    const out = await merge("dare_linear", { params, seed: s });
    for (let j = 0; j < out.length; j++) mean[j] += out[j]! / runs;
    if (s === 0) single = Math.hypot(...out.map((v, j) => v - undropped[j]!));
  }
  // Dropping with keep probability p and rescaling gives each weighted delta the variance
  // (w d)^2 (1 - p) / p, so the mean of `runs` merges misses the undropped merge by about
  // sigma = sqrt(Σ (w d)^2 (1 - p) / p / runs) in L2 norm (a chi distribution with 960 degrees
  // of freedom, within a few percent of sigma).
  let variance = 0;
  models.forEach((m, i) => m.forEach((v, j) => { variance += ((W[i]! * (v - base[j]!)) ** 2 * (1 - density)) / density; }));
  const sigma = Math.sqrt(variance / runs);
  const miss = Math.hypot(...mean.map((v, j) => v - undropped[j]!));
  assert.ok(miss > 0.8 * sigma && miss < 1.2 * sigma, `mean misses the undropped merge by ${miss}, expected about ${sigma}`);
  assert.ok(single > 0.8 * sigma * Math.sqrt(runs), `one merge is not random enough: ${single}`);

  const again = await merge("dare_ties", { params, seed: 7 });
  assert.deepEqual(await merge("dare_ties", { params, seed: 7 }), again);
  assert.notDeepEqual(await merge("dare_ties", { params, seed: 8 }), again);
});

test("mergekit parameter settings: scalars, gradients over layers, first matching filter", () => {
  assert.equal(evaluateSetting("x", 0.5, 0.3), 0.5);
  assert.equal(evaluateSetting("x", [0, 1], 0.25), 0.25);
  assert.ok(Math.abs((evaluateSetting("x", [0, 0.5, 0.3, 0.7, 1], 0.5) as number) - 0.3) < 1e-12);
  const filtered = [{ filter: "self_attn", value: [0, 1] }, { filter: "mlp", value: 0.7 }, { value: 0.1 }];
  assert.equal(evaluateSetting("model.layers.1.self_attn.q_proj.weight", filtered, 1), 1);
  assert.equal(evaluateSetting("model.layers.1.mlp.up_proj.weight", filtered, 1), 0.7);
  assert.equal(evaluateSetting("model.norm.weight", filtered, 0), 0.1);
  assert.equal(evaluateSetting("model.norm.weight", [{ filter: "mlp", value: 1 }], 0), undefined);
  assert.equal(gradientPosition("model.layers.3.mlp.up_proj.weight", 4), 1);
  assert.equal(gradientPosition("model.embed_tokens.weight", 4), 0);
  assert.equal(depthPosition("model.embed_tokens.weight", 4), 0);
  assert.equal(depthPosition("lm_head.weight", 4), 1);
  assert.equal(depthPosition("transformer.h.1.attn.c_attn.weight", 3), 0.5);
});

test("quickselect finds order statistics, with duplicates", () => {
  const normal = seededNormal(3);
  for (const n of [1, 2, 7, 1000]) {
    const values = Float32Array.from({ length: n }, (_, i) => (i % 5 === 0 ? 0.5 : Math.abs(normal())));
    const sorted = Float32Array.from(values).sort();
    for (const k of [1, Math.ceil(n / 3), n]) assert.equal(kthLargest(Float32Array.from(values), k), sorted[n - k]);
    assert.equal(selectAscending(Float32Array.from(values), 0), sorted[0]);
  }
});

test("truncated SVD: exact for low rank, converges for full rank", () => {
  const normal = seededNormal(11);
  const m = 30, n = 20;
  // rank 3: exact after one block iteration
  const left = Array.from({ length: 3 }, () => Float64Array.from({ length: m }, () => normal()));
  const right = Array.from({ length: 3 }, () => Float64Array.from({ length: n }, () => normal()));
  const lowRank = new Float64Array(m * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) lowRank[i * n + j] += (3 - c) * left[c]![i]! * right[c]![j]!;
  const exact = truncatedSvd(lowRank, m, n, 3);
  assert.equal(exact.iterations, 1);
  assert.ok(reconstructionError(lowRank, exact, m, n) < 1e-10);
  // full rank: the best rank-4 approximation, whose error is the tail of the spectrum
  const full = Float64Array.from({ length: m * n }, () => normal());
  const top = truncatedSvd(full, m, n, 4, { oversampling: 2, tol: 1e-10 });
  assert.ok(top.converged, `residual ${top.residual}`);
  const all = truncatedSvd(full, m, n, n);
  const tail = Math.sqrt(Array.from(all.s.slice(4)).reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(reconstructionError(full, top, m, n) - tail) < 1e-8 * tail);
  for (let j = 0; j < 4; j++) assert.ok(Math.abs(top.s[j]! - all.s[j]!) < 1e-9 * all.s[0]!);
});

function reconstructionError(a: Float64Array, svd: ReturnType<typeof truncatedSvd>, m: number, n: number): number {
  const r = svd.s.length;
  let err = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let c = 0; c < r; c++) v += svd.u[i * r + c]! * svd.s[c]! * svd.vt[c * n + j]!;
      err += (a[i * n + j]! - v) ** 2;
    }
  }
  return Math.sqrt(err);
}
