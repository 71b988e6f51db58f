// The backward pass's OUT_PROD rewrite (Graph.rewriteSlowOutProducts): gradients of a two-factor
// product y = B (A x) against float64 gradients computed by hand, with every operand a variable,
// in shapes that exercise each rewritten form (LoRA ranks, 2 KiB-multiple rows, plain rows), on
// ggml's CPU kernels and with the BLAS backend taking the matmuls it can (then nothing is
// rewritten: its sgemm takes OUT_PROD as is); and LoRA gradients over half-precision and
// quantized bases against ggml's own OUT_PROD.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadAdapter } from "../src/adapters/peft-io.ts";
import { BLAS_MIN_FLOPS, Graph } from "../src/engine/graph.ts";
import type { DType } from "../src/engine/tensor.ts";
import { loadModel } from "../src/models/index.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";
import { seededNormal } from "../src/engine/random.ts";
import { TensorStore } from "../src/engine/store.ts";
import { blasMissing, testBackend } from "./support/backend.ts";
import { maxRelError } from "./support/gradcheck.ts";

/** c [n, m] (ggml order, row i of length n) = sum_l a[l, i] b[l, j] for a [k, n], b [k, m]: ggml_mul_mat. */
function mulMat64(a: Float64Array, b: Float64Array, k: number, n: number, m: number): Float64Array {
  const c = new Float64Array(n * m);
  for (let j = 0; j < m; j++) for (let i = 0; i < n; i++) {
    let s = 0;
    for (let l = 0; l < k; l++) s += a[i * k + l] * b[j * k + l];
    c[j * n + i] = s;
  }
  return c;
}

/** Transpose of a ggml [n0, n1] matrix. */
function transpose64(a: Float64Array, n0: number, n1: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let j = 0; j < n1; j++) for (let i = 0; i < n0; i++) t[i * n1 + j] = a[j * n0 + i];
  return t;
}

// [in, r, out, tokens] and the rewrites expected among the four OUT_PROD nodes (dA, dB, dh, dx).
const CASES: [number[], Graph["outProdRewrites"]][] = [
  [[80, 4, 96, 70], { swapped: 1, input_mul_mat: 1, weight_mul_mat: 0 }], // LoRA rank 4: dB, dh
  [[256, 16, 688, 64], { swapped: 1, input_mul_mat: 1, weight_mul_mat: 0 }],
  [[40, 8, 24, 10], { swapped: 1, input_mul_mat: 2, weight_mul_mat: 0 }], // narrow in: dx too
  [[512, 4, 1024, 40], { swapped: 1, input_mul_mat: 2, weight_mul_mat: 1 }], // 2 KiB rows: dA, dx
  [[1024, 96, 1536, 24], { swapped: 1, input_mul_mat: 1, weight_mul_mat: 0 }], // plain r: only dA, dx
  [[40, 512, 1024, 16], { swapped: 1, input_mul_mat: 2, weight_mul_mat: 1 }], // dB over two slow widths
  [[256, 64, 192, 64], { swapped: 0, input_mul_mat: 0, weight_mul_mat: 0 }], // with BLAS: every matmul on it
];

/**
 * The nodes BLAS runs in y = B (A x): per layer, when it reaches BLAS_MIN_FLOPS, its two OUT_PRODs
 * and its forward mul_mat (as an OUT_PROD when a side is under ggml-blas's 32).
 */
function blasNodes(inp: number, r: number, out: number, tokens: number): number {
  return [[inp, r], [r, out]].filter(([k, m]) => 2 * k * m * tokens >= BLAS_MIN_FLOPS).length * 3;
}

/** The forward mul_mats BLAS runs as OUT_PROD: those it runs with a side under 32. */
function narrowMulMats(inp: number, r: number, out: number, tokens: number): number {
  return [[inp, r], [r, out]].filter(([k, m]) => 2 * k * m * tokens >= BLAS_MIN_FLOPS && Math.min(k, m, tokens) < 32).length;
}

for (const blas of [false, true]) for (const [[inp, r, out, tokens], expected] of CASES) {
  const skip = blas && blasMissing();
  test(`y = B (A x), in=${inp} r=${r} out=${out} T=${tokens}${blas ? ", BLAS" : ""}: gradients of every operand match float64`, { skip }, async () => {
    const backend = await testBackend({ blas });
    const normal = seededNormal(inp + r);
    const draw = (n: number) => Float64Array.from({ length: n }, () => normal());
    const [a64, b64, x64, w64] = [draw(inp * r), draw(r * out), draw(inp * tokens), draw(out * tokens)];
    const store = new TensorStore(backend, "rewrite test", 4);
    const a = store.tensor("f32", [inp, r], "A");
    const b = store.tensor("f32", [r, out], "B");
    const x = store.tensor("f32", [inp, tokens], "x");
    const w = store.tensor("f32", [out, tokens], "w");
    store.allocate();
    for (const [t, v] of [[a, a64], [b, b64], [x, x64], [w, w64]] as const) t.setAll(Float32Array.from(v));
    const g = new Graph(backend, { grads: true });
    try {
      for (const t of [a, b, x]) g.param(t);
      const h = g.mulMat(a, x); // [r, T]
      const y = g.mulMat(b, h); // [out, T]
      g.backward(g.sum(g.mul(y, w)));
      const grads = [a, b, x].map((t) => g.grad(t));
      g.allocate();
      g.compute();
      // L = sum(w * y): dy = w; dB = h dy^T, dh = B dy, dA = x dh^T, dx = A dh (ggml layouts).
      const hRef = mulMat64(a64, x64, inp, r, tokens);
      const dh = mulMat64(transpose64(b64, r, out), w64, out, r, tokens);
      const want = [
        mulMat64(transpose64(x64, inp, tokens), transpose64(dh, r, tokens), tokens, inp, r),
        mulMat64(transpose64(hRef, r, tokens), transpose64(w64, out, tokens), tokens, r, out),
        mulMat64(transpose64(a64, inp, r), dh, r, inp, tokens),
      ];
      grads.forEach((t, i) => {
        const scale = want[i].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const err = maxRelError(t.getF32(), want[i], scale);
        assert.ok(err < 1e-5, `${["dA", "dB", "dx"][i]}: error ${err} relative to the largest entry`);
      });
      assert.equal(g.blasShare.nodes, blas ? blasNodes(inp, r, out, tokens) : 0);
      assert.equal(g.narrowMulMats, blas ? narrowMulMats(inp, r, out, tokens) : 0);
      // What BLAS takes is not rewritten; the rest as on ggml's CPU kernels alone.
      if (blas) for (const form of Object.keys(expected) as (keyof typeof expected)[]) assert.ok(g.outProdRewrites[form] <= expected[form]);
      else assert.deepEqual(g.outProdRewrites, expected);
    } finally {
      g.free();
      store.free();
    }
  });
}

/** Every LoRA gradient of llama-tiny's loss over a base held as `weightDtype`. */
async function loraGradients(weightDtype: DType, rewriteOutProducts: boolean, frozenWeightCopy?: "f32" | "weight-type") {
  const base = path.join(FIXTURES, "llama-tiny");
  const model = loadModel(await testBackend({ blas: false }), base, { weightDtype });
  const adapter = loadAdapter(model, path.join(FIXTURES, "llama-tiny-lora-copy"));
  const { batch, labels } = referenceBatch(base);
  const g = new Graph(model.backend, { grads: true, maxNodes: model.graphNodes, rewriteOutProducts, frozenWeightCopy });
  try {
    const { logits, inputs } = model.forward(g, batch.batchSize, batch.seqLen);
    const { loss, targets } = model.buildLoss(g, logits, batch.batchSize, batch.seqLen);
    for (const t of adapter.trainable) g.param(t);
    g.backward(loss);
    const grads = adapter.trainable.map((t) => g.grad(t));
    g.allocate();
    for (const [t, fill] of inputs.values) t.setAll(fill(batch));
    for (const [t, fill] of targets) t.setAll(fill({ labels }));
    g.compute();
    return { grads: grads.map((t) => t.getF32()), rewrites: { ...g.outProdRewrites } };
  } finally {
    g.free();
    adapter.free();
    model.free();
  }
}

for (const dtype of ["f16", "q8_0"] as const) {
  test(`LoRA over a ${dtype} base: the input gradients through the frozen weights match ggml's own OUT_PROD`, async () => {
    const ours = await loraGradients(dtype, true);
    const ggml = await loraGradients(dtype, false);
    assert.ok(ours.rewrites.input_mul_mat > 0, JSON.stringify(ours.rewrites));
    ours.grads.forEach((got, i) => {
      const want = ggml.grads[i];
      const err = maxRelError(got, want, want.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
      assert.ok(err < 1e-5, `gradient ${i}: error ${err}`);
    });
  });
}

test("LoRA over a bf16 base trains on the CPU (ggml has no bf16 OUT_PROD) with gradients near the f16 base's", async () => {
  const bf16 = await loraGradients("bf16", true);
  const f16 = await loraGradients("f16", true);
  let worst = 0;
  bf16.grads.forEach((got, i) => {
    const want = f16.grads[i];
    const err = maxRelError(got, want, want.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
    assert.ok(err < 5e-2, `gradient ${i}: error ${err} (bf16 against f16 rounding of the same weights)`);
    worst = Math.max(worst, err);
  });
  process.stdout.write(`# LoRA gradients, bf16 base vs f16 base: ${worst.toExponential(2)} relative to the largest entry\n`);
});

// GPU backends transpose a frozen half-precision weight in its own type, so that the input
// gradient's mul_mat runs on tensor cores; the CPU backend runs that arrangement too, rounding the
// incoming gradient to the weight's type inside mul_mat, which bounds the difference.
for (const [dtype, tolerance] of [["f16", 5e-3], ["bf16", 5e-2]] as const) {
  test(`LoRA over a ${dtype} base: a weight transposed in its own type gives the f32 copy's gradients up to ${dtype} rounding`, async () => {
    const own = await loraGradients(dtype, true, "weight-type");
    const f32 = await loraGradients(dtype, true, "f32");
    assert.ok(own.rewrites.input_mul_mat > 0, JSON.stringify(own.rewrites));
    own.grads.forEach((got, i) => {
      const want = f32.grads[i];
      const err = maxRelError(got, want, want.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
      assert.ok(err < tolerance, `gradient ${i}: error ${err}`);
    });
  });
}
