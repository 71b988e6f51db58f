// The BLAS backend (engine/blas.ts) beside ggml's CPU kernels: a training graph split between the
// two computes the loss and every gradient that the CPU kernels alone compute, up to float
// rounding, for full fine-tuning and for LoRA over an f16 base; and the thread count stays within
// the CPUs the process may use.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import os from "node:os";
import { Backend } from "../src/engine/backend.ts";
import { Graph } from "../src/engine/graph.ts";
import { seededNormal, seededUniform } from "../src/engine/random.ts";
import { TensorStore } from "../src/engine/store.ts";
import type { DType } from "../src/engine/tensor.ts";
import { loadModel } from "../src/models/index.ts";
import { blasMissing, testBackend } from "./support/backend.ts";
import { maxRelError } from "./support/gradcheck.ts";

// review-llama: hidden 128, SwiGLU 344, vocab 512, 4 layers, 2 KV heads; 4 x 128 tokens make every
// projection, the LM head, attention's per-head products and LoRA's rank-16 products large enough
// for BLAS.
const MODEL = path.join(import.meta.dirname, "../models/review-llama");
const B = 4;
const S = 128;
const skip = blasMissing();
// Read before any test runs: BLAS's thread placement pins the main thread to one CPU.
const CPUS = os.availableParallelism();

/**
 * Loss and gradients of seeded token batches, and how much of the graph BLAS ran. With two
 * micro-batches the gradients are added into accumulators in place, as in the trainer's gradient
 * accumulation.
 */
async function lossAndGradients(backend: Backend, method: "full" | "lora", weightDtype: DType, microBatches = 1) {
  const model = loadModel(backend, MODEL, { weightDtype });
  const adapter = method === "lora" ? new LoraAdapter(model, loraConfig({
    r: 16, loraAlpha: 32, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
  }), { seed: 1 }) : undefined;
  // PEFT starts B at zero, which would leave A's gradients zero: give B values so that both count.
  const normal = seededNormal(2);
  for (const [name, t] of adapter?.stateDict ?? []) {
    if (name.includes("lora_B")) t.setAll(Float32Array.from({ length: t.elements }, () => 0.05 * normal()));
  }
  const params = adapter ? adapter.trainable : model.parameterNames.map((name) => model.param(name));
  const random = seededUniform(7);
  const g = new Graph(backend, { grads: true, maxNodes: model.graphNodes });
  const accumulators = new TensorStore(backend, "accumulators", params.length);
  try {
    const { logits, inputs } = model.forward(g, B, S);
    const { loss, targets } = model.buildLoss(g, logits, B, S);
    for (const t of params) g.param(t);
    const byParam = new Map(params.map((t) => [t.ptr, accumulators.tensor("f32", t.ne, `acc ${t.name}`)]));
    accumulators.allocate();
    if (microBatches > 1) g.backward(loss, (p) => byParam.get(p.ptr), { accumulate: true });
    else g.backward(loss);
    const grads = microBatches > 1 ? params.map((t) => byParam.get(t.ptr)!) : params.map((t) => g.grad(t));
    g.allocate();
    let lossSum = 0;
    for (let micro = 0; micro < microBatches; micro++) {
      const ids = Int32Array.from({ length: B * S }, () => Math.floor(random() * 512));
      for (const [t, fill] of inputs.values) t.setAll(fill({ batchSize: B, seqLen: S, inputIds: ids }));
      for (const [t, fill] of targets) t.setAll(fill({ labels: ids }));
      g.compute();
      lossSum += loss.getF32()[0];
    }
    return { loss: lossSum, grads: grads.map((t) => t.getF32()), share: g.blasShare, rewrites: { ...g.outProdRewrites }, narrow: g.narrowMulMats, sliced: g.slicedOutProds };
  } finally {
    accumulators.free();
    g.free();
    adapter?.free();
    model.free();
  }
}

// Over an f16 base ggml's own mul_mat rounds the activations to f16 too, BLAS works on the weight
// converted to f32: the two differ by f16 rounding there, by f32 rounding elsewhere.
const TOLERANCE = { f32: 1e-4, f16: 5e-3 };

for (const [method, dtype, microBatches] of [["full", "f32", 1], ["lora", "f32", 1], ["lora", "f16", 1], ["full", "f32", 2]] as const) {
  const accumulated = microBatches > 1 ? `, accumulated over ${microBatches} micro-batches` : "";
  test(`${method} over an ${dtype} review-llama${accumulated}: BLAS and ggml's CPU kernels give the same loss and gradients`, { skip }, async () => {
    const withBlas = await lossAndGradients(await testBackend({ blas: true }), method, dtype, microBatches);
    const cpuOnly = await lossAndGradients(await testBackend({ blas: false }), method, dtype, microBatches);
    assert.equal(cpuOnly.share.nodes, 0);
    // Every projection, its two gradients and the LM head at least.
    assert.ok(withBlas.share.nodes >= 4 * 7 * (method === "full" ? 3 : 2), `BLAS ran ${withBlas.share.nodes} nodes`);
    // Attention's four batched gradients per layer (dq, dk, dv, d(probs)) become BLAS products
    // one head at a time.
    assert.equal(withBlas.sliced, 4 * 4);
    if (dtype === "f32") assert.equal(withBlas.rewrites.input_mul_mat, 0);
    // LoRA's x A and B h (a side of 16) run on BLAS as OUT_PROD: 7 projections x 4 layers x 2.
    if (method === "lora" && dtype === "f32") assert.equal(withBlas.narrow, 7 * 4 * 2);
    assert.ok(Math.abs(withBlas.loss - cpuOnly.loss) < TOLERANCE[dtype] * cpuOnly.loss, `loss ${withBlas.loss} vs ${cpuOnly.loss}`);
    withBlas.grads.forEach((got, i) => {
      const want = cpuOnly.grads[i];
      const err = maxRelError(got, want, want.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
      assert.ok(err < TOLERANCE[dtype], `gradient ${i}: error ${err} relative to the largest entry`);
    });
  });
}

test("more threads than the process's CPUs are capped: spinning threads on shared cores made steps 40x slower", async () => {
  const backend = await Backend.open({ device: "cpu", threads: CPUS + 3 });
  try {
    assert.equal(backend.threadCount, CPUS);
  } finally {
    backend.close();
  }
});
