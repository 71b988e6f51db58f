// AdamW with gradient clipping against a float64 reference of what transformers' Trainer does:
// torch.nn.utils.clip_grad_norm_ (total L2 norm, coefficient max_norm / (norm + 1e-6) when above)
// then torch.optim.AdamW (decoupled weight decay, bias-corrected moments, eps after the sqrt), over
// several steps of accumulated micro-batches, with and without clipping.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Graph } from "../src/engine/graph.ts";
import { seededNormal } from "../src/engine/random.ts";
import { TensorStore } from "../src/engine/store.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/train/optimizer.ts";
import { testBackend } from "./support/backend.ts";
import { maxRelError } from "./support/gradcheck.ts";

const SHAPES = [[300, 70], [64], [17, 5, 3]];
const OPTIONS = { ...ADAMW_DEFAULTS, weightDecay: 0.01, maxGradNorm: 1 };
const LR = 1e-2;
const MICRO = 2;

function reference(params: Float64Array[], grads: Float64Array[][][], steps: number): Float64Array[] {
  const { beta1, beta2, eps, weightDecay, maxGradNorm } = OPTIONS;
  const p = params.map((x) => Float64Array.from(x));
  const m = p.map((x) => new Float64Array(x.length));
  const v = p.map((x) => new Float64Array(x.length));
  for (let t = 1; t <= steps; t++) {
    // The mean over micro-batches, as the trainer's scaled losses give it.
    const g = p.map((x, i) => x.map((_, j) => grads[t - 1].reduce((s, micro) => s + micro[i][j], 0) / MICRO));
    const norm = Math.sqrt(g.reduce((s, gi) => s + gi.reduce((a, x) => a + x * x, 0), 0));
    const clip = norm > maxGradNorm ? maxGradNorm / (norm + 1e-6) : 1;
    p.forEach((x, i) => {
      for (let j = 0; j < x.length; j++) {
        const gj = g[i][j] * clip;
        m[i][j] = beta1 * m[i][j] + (1 - beta1) * gj;
        v[i][j] = beta2 * v[i][j] + (1 - beta2) * gj * gj;
        const mHat = m[i][j] / (1 - beta1 ** t);
        const vHat = v[i][j] / (1 - beta2 ** t);
        x[j] = x[j] * (1 - LR * weightDecay) - LR * mHat / (Math.sqrt(vHat) + eps);
      }
    });
  }
  return p;
}

test("AdamW with clipping follows clip_grad_norm_ + torch.optim.AdamW over accumulated steps", async () => {
  const backend = await testBackend();
  const normal = seededNormal(11);
  const draw = (n: number, scale: number) => Float64Array.from({ length: n }, () => scale * normal());
  const size = (ne: number[]) => ne.reduce((a, b) => a * b, 1);
  const store = new TensorStore(backend, "optimizer test", SHAPES.length);
  const tensors = SHAPES.map((ne, i) => store.tensor("f32", ne, `p${i}`));
  store.allocate();
  const start = SHAPES.map((ne) => Float64Array.from(draw(size(ne), 1), (x) => Math.fround(x)));
  tensors.forEach((t, i) => t.setAll(Float32Array.from(start[i])));
  // Step 1 far above the clipping norm, step 2 below it, step 3 above again.
  const scales = [0.2, 0.002, 0.05];
  const grads = scales.map((scale) => Array.from({ length: MICRO }, () =>
    SHAPES.map((ne) => Float64Array.from(draw(size(ne), scale), (x) => Math.fround(x)))));
  // Training marks its parameters in the forward graph; adamwStep requires the mark.
  const forward = new Graph(backend, { grads: true });
  for (const t of tensors) forward.param(t);
  forward.free();
  const optimizer = new AdamW(backend, tensors.map((tensor, i) => ({ name: `p${i}`, tensor })), OPTIONS);
  try {
    const norms: number[] = [];
    for (const micros of grads) {
      optimizer.zeroGrad();
      const sums = SHAPES.map((ne, i) => Float32Array.from({ length: size(ne) }, (_, j) => micros.reduce((s, micro) => s + micro[i][j], 0)));
      tensors.forEach((t, i) => optimizer.accumulatorOf(t)!.setAll(sums[i]));
      norms.push(optimizer.step(LR, MICRO));
    }
    assert.ok(norms[0] > 1 && norms[1] < 1 && norms[2] > 1, `the steps should clip, not clip, clip: norms ${norms.join(", ")}`);
    const want = reference(start, grads, grads.length);
    tensors.forEach((t, i) => {
      const err = maxRelError(t.getF32(), want[i]);
      assert.ok(err < 1e-5, `p${i}: error ${err}`);
    });
  } finally {
    optimizer.free();
    store.free();
  }
});
