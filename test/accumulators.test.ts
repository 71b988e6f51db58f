// Gradient accumulators written instead of added to (backward with accumulate: false, what the
// trainer does with one micro-batch a step): the same gradients as zeroed accumulators that are
// added to, compute after compute, for each kind of first gradient term (one computed straight into
// the accumulator, one copied in because it is a view, a parameter with two terms).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Graph } from "../src/engine/graph.ts";
import { seededNormal } from "../src/engine/random.ts";
import { TensorStore } from "../src/engine/store.ts";
import type { Tensor } from "../src/engine/tensor.ts";
import { testBackend } from "./support/backend.ts";

test("backward with accumulate: false overwrites the accumulators with exactly the added gradients", async () => {
  const backend = await testBackend();
  const normal = seededNormal(5);
  const params = new TensorStore(backend, "params", 3);
  const w = params.tensor("f32", [8, 6], "w"); // used twice: two gradient terms
  const u = params.tensor("f32", [6, 5], "u"); // one OUT_PROD term, computed in place
  const bias = params.tensor("f32", [5, 1], "bias"); // used through a reshape: its term is a view, copied
  params.allocate();
  for (const t of [w, u, bias]) t.setAll(Float32Array.from({ length: t.elements }, () => normal()));

  const build = (accumulate: boolean) => {
    const g = new Graph(backend, { grads: true });
    for (const t of [w, u, bias]) g.param(t);
    const x1 = g.input("f32", [8, 4], "x1");
    const x2 = g.input("f32", [8, 4], "x2");
    const h = g.add(g.mulMat(w, x1), g.mulMat(w, x2)); // [6, 4]
    const y = g.add(g.mulMat(u, h), g.reshape(bias, [5])); // [5, 4]
    const loss = g.sum(g.sqr(y));
    const store = new TensorStore(backend, `accumulators (accumulate ${accumulate})`, 3);
    const accs = new Map<Tensor["ptr"], Tensor>([w, u, bias].map((t) => [t.ptr, store.tensor("f32", t.ne, `acc ${t.name}`)]));
    store.allocate();
    g.backward(loss, (p) => accs.get(p.ptr), { accumulate });
    g.allocate();
    return { g, store, inputs: [x1, x2], accs: [w, u, bias].map((t) => accs.get(t.ptr)!) };
  };
  const added = build(true);
  const written = build(false);
  try {
    assert.deepEqual(written.g.accumulatorWrites, { computed: 2, copied: 1 });
    for (let step = 0; step < 3; step++) {
      const xs = added.inputs.map((t) => Float32Array.from({ length: t.elements }, () => normal()));
      added.store.clear();
      for (const run of [added, written]) {
        run.inputs.forEach((t, i) => t.setAll(xs[i]));
        run.g.compute();
      }
      // Without zeroing, an accumulator that was added to would hold the sum of the steps so far.
      written.accs.forEach((acc, i) => {
        assert.deepEqual(acc.getF32(), added.accs[i].getF32(), `step ${step}: ${acc.name} differs`);
      });
    }
  } finally {
    for (const run of [added, written]) {
      run.g.free();
      run.store.free();
    }
    params.free();
  }
});
