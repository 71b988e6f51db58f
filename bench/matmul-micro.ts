// GFLOP/s of the matmuls of a linear layer's forward and backward on the CPU backend: ggml's
// autograd (OUT_PROD) against mul_mat over contiguous (transposed) copies, for the shapes of the
// bench configurations. Usage: node --import tsx bench/matmul-micro.ts [small|smollm|head|narrow|wide|rows|all] [threads] [rows list]
import { Backend } from "../src/engine/backend.ts";
import { Graph } from "../src/engine/graph.ts";
import { seededNormal } from "../src/engine/random.ts";
import { TensorStore } from "../src/engine/store.ts";
import type { Tensor } from "../src/engine/tensor.ts";

const [which = "small", threadsArg = "2"] = process.argv.slice(2);
const backend = await Backend.open({ device: "cpu", threads: Number(threadsArg) });
const T = 512;
const shapes: [string, number, number][] = [];
if (!["small", "smollm", "head", "narrow", "wide", "rows", "all"].includes(which)) throw new Error(`unknown set ${which}: small, smollm, head, narrow, wide, rows or all`);
if (which === "small" || which === "all") {
  shapes.push(["attn 256x256", 256, 256], ["mlp up 256x688", 256, 688], ["mlp down 688x256", 688, 256], ["head 256x512", 256, 512],
    ["lora A 256x16", 256, 16], ["lora B 16x256", 16, 256], ["lora B 16x688", 16, 688], ["lora A 688x16", 688, 16]);
}
if (which === "smollm" || which === "all") {
  shapes.push(["attn 576x576", 576, 576], ["kv 576x192", 576, 192], ["mlp up 576x1536", 576, 1536], ["mlp down 1536x576", 1536, 576],
    ["lora A 576x16", 576, 16], ["lora B 16x1536", 16, 1536]);
}
if (which === "head" || which === "all") {
  shapes.push(["head 576x49152", 576, 49152]);
}

const normal = seededNormal(1);
const fill = (t: Tensor) => t.setAll(Float32Array.from({ length: t.elements }, () => normal()));

/** Median ms of one op, computed `reps` times in one graph (amortising the per-compute overhead). */
function time(build: (g: Graph) => Tensor, reps: number, runs = reps > 2 ? 7 : 3): number {
  const g = new Graph(backend, { maxNodes: 8 * reps + 16 });
  try {
    for (let i = 0; i < reps; i++) g.output(build(g));
    g.allocate();
    g.compute();
    const ms: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      g.compute();
      ms.push((performance.now() - t0) / reps);
    }
    return ms.sort((a, b) => a - b)[Math.floor(runs / 2)];
  } finally {
    g.free();
  }
}

if (which === "narrow") {
  // out_prod(a [n, k], b [m, k]) -> [n, m] with a narrow first operand (n = LoRA rank), k tokens:
  // as is, with the operands swapped and the result transposed back, and (b a transposed view, the
  // input-gradient form) as mul_mat against the transposed narrow operand.
  for (const [n, m, k] of [[16, 256, 512], [16, 688, 512], [16, 1536, 512], [32, 256, 512], [64, 256, 512], [64, 128, 128], [128, 256, 512], [256, 256, 512]]) {
    const store = new TensorStore(backend, "narrow", 4);
    const a = store.tensor("f32", [n, k], "a");
    const b = store.tensor("f32", [m, k], "b");
    const gk = store.tensor("f32", [k, m], "g");
    store.allocate();
    for (const t of [a, b, gk]) fill(t);
    const flop = 2 * n * m * k;
    const reps = Math.max(2, Math.min(40, Math.round(1e9 / flop)));
    const gf = (ms: number) => `${(flop / ms / 1e6).toFixed(1)} (${ms.toFixed(3)}ms)`;
    process.stdout.write(`${JSON.stringify({
      "n x m, k": `${n}x${m}, ${k}`,
      weight_grad_outprod: gf(time((g) => g.outProd(a, b), reps)),
      weight_grad_swapped: gf(time((g) => g.cont(g.transpose(g.outProd(b, a))), reps)),
      input_grad_outprod: gf(time((g) => g.outProd(a, g.transpose(gk)), reps)),
      input_grad_mulmat: gf(time((g) => g.mulMat(g.cont(g.transpose(a)), gk), reps)),
    })}\n`);
    store.free();
  }
}

if (which === "rows") {
  // GFLOP/s of the input-gradient form against the first operand's row length n (k = 576, 512
  // tokens): OUT_PROD slows down for rows under 64 floats and rows of a 2 KiB multiple.
  const list = (process.argv[4] ?? "16,256,512,640,1024,1536,2048,2816,3072,4864,8960,11008").split(",").map(Number);
  for (const n of list) {
    const [k, m] = [576, 512];
    const store = new TensorStore(backend, "rows", 2);
    const w = store.tensor("f32", [n, k], "w");
    const gk = store.tensor("f32", [k, m], "g");
    store.allocate();
    for (const t of [w, gk]) fill(t);
    const flop = 2 * n * m * k;
    const reps = Math.max(2, Math.min(40, Math.round(5e8 / flop)));
    const gf = (ms: number) => Number((flop / ms / 1e6).toFixed(1));
    process.stdout.write(`${JSON.stringify({
      n, out_prod: gf(time((g) => g.outProd(w, g.transpose(gk)), reps)),
      mul_mat_transposed_copy: gf(time((g) => g.mulMat(g.cont(g.transpose(w)), gk), reps)),
    })}\n`);
    store.free();
  }
}

if (which === "wide") {
  // The same two gradient forms with a wide first operand: a [n, k] is a weight [in, out] (input
  // gradient, b = transpose(g [k, m]), m tokens) or activations [in, tokens] (weight gradient,
  // b [m, k] = upstream gradient [out, tokens]).
  for (const [n, k, m] of [[688, 256, 512], [1024, 576, 512], [1536, 576, 512], [2048, 2048, 512], [4096, 1024, 512], [8192, 2048, 512]]) {
    const store = new TensorStore(backend, "wide", 6);
    const w = store.tensor("f32", [n, k], "w");
    const gk = store.tensor("f32", [k, m], "g");
    const x = store.tensor("f32", [n, m], "x");
    const gy = store.tensor("f32", [k, m], "gy");
    store.allocate();
    for (const t of [w, gk, x, gy]) fill(t);
    const flop = 2 * n * m * k;
    const reps = Math.max(2, Math.min(40, Math.round(1e9 / flop)));
    const gf = (ms: number) => `${(flop / ms / 1e6).toFixed(1)} (${ms.toFixed(2)}ms)`;
    process.stdout.write(`${JSON.stringify({
      "n, k, m": `${n}, ${k}, ${m}`,
      input_grad_outprod: gf(time((g) => g.outProd(w, g.transpose(gk)), reps)),
      input_grad_mulmat_cont: gf(time((g) => g.mulMat(g.cont(g.transpose(w)), gk), reps)),
      weight_grad_outprod: gf(time((g) => g.outProd(x, gy), reps)),
      weight_grad_swapped: gf(time((g) => g.cont(g.transpose(g.outProd(gy, x))), reps)),
      weight_grad_mulmat_conts: gf(time((g) => g.mulMat(g.cont(g.transpose(x)), g.cont(g.transpose(gy))), reps)),
    })}\n`);
    store.free();
  }
}

const rows: Record<string, string | number>[] = [];
for (const [name, inp, out] of shapes) {
  const store = new TensorStore(backend, "micro", 8);
  const w = store.tensor("f32", [inp, out], "w");
  const wt = store.tensor("f32", [out, inp], "wt");
  const x = store.tensor("f32", [inp, T], "x");
  const xt = store.tensor("f32", [T, inp], "xt");
  const gy = store.tensor("f32", [out, T], "g");
  const gyt = store.tensor("f32", [T, out], "gt");
  store.allocate();
  for (const t of [w, wt, x, xt, gy, gyt]) fill(t);
  const flop = 2 * inp * out * T;
  const reps = Math.max(2, Math.min(40, Math.round(2e9 / flop)));
  const gf = (ms: number) => Number((flop / ms / 1e6).toFixed(1));
  const ms = {
    fwd: time((g) => g.mulMat(w, x), reps),
    dW_outprod: time((g) => g.outProd(x, gy), reps),
    dW_mulmat: time((g) => g.mulMat(xt, gyt), reps),
    dW_mulmat_conts: time((g) => g.mulMat(g.cont(g.transpose(x)), g.cont(g.transpose(gy))), reps),
    dx_outprod: time((g) => g.outProd(w, g.transpose(gy)), reps),
    dx_mulmat: time((g) => g.mulMat(wt, gy), reps),
    dx_mulmat_cont: time((g) => g.mulMat(g.cont(g.transpose(w)), gy), reps),
    // the narrow-operand rewrites: out_prod with the wide operand first, transposed back; and the
    // input gradient as mul_mat against the transposed (small) weight
    dW_outprod_swapped: time((g) => g.cont(g.transpose(g.outProd(gy, x))), reps),
    cont_x: time((g) => g.cont(g.transpose(x)), reps),
    cont_w: time((g) => g.cont(g.transpose(w)), reps),
  };
  const row: Record<string, string | number> = { shape: name, T };
  for (const [k, v] of Object.entries(ms)) row[k] = k.startsWith("cont") ? `${v.toFixed(3)}ms` : `${gf(v)} (${v.toFixed(3)}ms)`;
  rows.push(row);
  process.stdout.write(`${JSON.stringify(row)}\n`);
  store.free();
}
