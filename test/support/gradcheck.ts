// Gradient checks: a ggml graph's value and autograd gradient against a float64 reference
// function and its central finite differences.
import assert from "node:assert/strict";
import type { Backend } from "../../src/engine/backend.ts";
import { Graph } from "../../src/engine/graph.ts";
import type { HostArray, Tensor } from "../../src/engine/tensor.ts";
import { seededUniform } from "../../src/engine/random.ts";

export interface GradCheckCase {
  /** ggml order shape of the variable. */
  ne: number[];
  x: Float64Array;
  /** Builds the function's output from the variable; extra inputs are filled after allocation. */
  build(g: Graph, x: Tensor): { out: Tensor; inputs?: [Tensor, HostArray][] };
  /** The same function in float64, output flattened in ggml order. */
  reference(x: Float64Array): Float64Array;
}

export interface GradCheckResult {
  maxValueError: number;
  maxGradError: number;
}

/** Max over elements of |a - b| / (|b| + floor): relative where values are large, absolute near 0. */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + floor);
    if (!(err <= worst)) worst = Number.isNaN(err) ? Infinity : err;
  }
  return worst;
}

/**
 * Checks out = f(x) through the scalar L = sum(out * r) for a fixed random r, so that every output
 * element weighs differently in the gradient (sum(LayerNorm(x)) alone would be constant).
 */
export function gradCheck(backend: Backend, c: GradCheckCase, h = 1e-5): GradCheckResult {
  const g = new Graph(backend, { grads: true });
  try {
    const x = g.param(g.input("f32", c.ne, "x"));
    const { out, inputs = [] } = c.build(g, x);
    const random = seededUniform(7);
    const r64 = Float64Array.from({ length: out.elements }, () => 0.5 + random());
    const r = g.input("f32", out.ne, "r");
    const loss = g.sum(g.mul(out, r));
    g.output(out);
    g.backward(loss);
    const grad = g.grad(x);
    g.allocate();
    x.setAll(Float32Array.from(c.x));
    r.setAll(Float32Array.from(r64));
    for (const [t, data] of inputs) t.setAll(data);
    g.compute();
    const outputs = out.getF32();
    const analytic = grad.getF32();
    const weighted = (x64: Float64Array) => c.reference(x64).reduce((acc, v, i) => acc + v * r64[i], 0);
    // The reference sees the float32-rounded inputs the graph saw.
    const x64 = Float64Array.from(Float32Array.from(c.x));
    const numeric = new Float64Array(x64.length);
    for (let i = 0; i < x64.length; i++) {
      const keep = x64[i];
      const step = h * Math.max(1, Math.abs(keep));
      x64[i] = keep + step;
      const up = weighted(x64);
      x64[i] = keep - step;
      const down = weighted(x64);
      x64[i] = keep;
      numeric[i] = (up - down) / (2 * step);
    }
    for (const v of [...analytic, ...outputs]) assert.ok(Number.isFinite(v), `non-finite value or gradient ${v}`);
    return { maxValueError: maxRelError(outputs, c.reference(x64)), maxGradError: maxRelError(analytic, numeric) };
  } finally {
    g.free();
  }
}
