// Attention's softmax outputs recomputed for the backward pass (Graph.backward's recomputeBytes):
// the same loss and bit-identical gradients as keeping them, in a smaller compute buffer. The
// comparison also catches SOFT_MAX_BACK computed in place over the recomputed output (the guard in
// protectSoftmaxOutputs), which gave gradients off by orders of magnitude when it was missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { Graph } from "../src/engine/graph.ts";
import { seededUniform } from "../src/engine/random.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";

const MODEL = path.join(import.meta.dirname, "../models/review-llama");
const B = 4;
const S = 128;

async function lossAndGradients(recomputeBytes: number) {
  const backend = await testBackend();
  const model = loadModel(backend, MODEL);
  const params = model.parameterNames.map((name) => model.param(name));
  const random = seededUniform(3);
  const ids = Int32Array.from({ length: B * S }, () => Math.floor(random() * 512));
  const g = new Graph(backend, { grads: true, maxNodes: model.graphNodes });
  try {
    const { logits, inputs } = model.forward(g, B, S);
    const { loss, targets } = model.buildLoss(g, logits, B, S);
    for (const t of params) g.param(t);
    g.backward(loss, undefined, { recomputeBytes });
    const grads = params.map((t) => g.grad(t));
    g.allocate();
    for (const [t, fill] of inputs.values) t.setAll(fill({ batchSize: B, seqLen: S, inputIds: ids }));
    for (const [t, fill] of targets) t.setAll(fill({ labels: ids }));
    g.compute();
    return { loss: loss.getF32()[0], grads: grads.map((t) => t.getF32()), bytes: g.computeBytes, nodes: g.nodes.length };
  } finally {
    g.free();
    model.free();
  }
}

test("recomputed attention softmaxes give bit-identical gradients in less memory", async () => {
  const kept = await lossAndGradients(Infinity);
  const recomputed = await lossAndGradients(0);
  assert.equal(recomputed.loss, kept.loss);
  recomputed.grads.forEach((got, i) => assert.deepEqual(got, kept.grads[i], `gradient ${i} differs`));
  // Four layers: a matmul and a softmax each, and the views the backward pass reads.
  assert.ok(recomputed.nodes >= kept.nodes + 2 * 4, `${recomputed.nodes} nodes against ${kept.nodes}`);
  // Each layer's probabilities are 1 MB (128 x 128 x 4 heads x 4 rows); most are no longer held.
  assert.ok(recomputed.bytes < kept.bytes - 2 * 2 ** 20, `compute buffer ${recomputed.bytes} against ${kept.bytes} bytes`);
});
