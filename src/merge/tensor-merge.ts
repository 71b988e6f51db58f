// Runs one merge method on one tensor: the inputs' stored bytes (f32/f16/bf16) go into ggml
// graph inputs as they are and are cast to f32 in the graph, an optional LoRA update is added,
// and the result is cast to the output dtype in the graph and read back as bytes.
import type { Backend } from "../engine/backend.ts";
import { Graph } from "../engine/graph.ts";
import { fromTorchShape, type DType, type Shape4, type Tensor } from "../engine/tensor.ts";
import type { MergeInputs, MergeMethod, Params } from "./methods.ts";
import type { LoraDelta } from "./sources.ts";
import { hashSeed } from "./ops.ts";

export type FloatDtype = "F32" | "F16" | "BF16";
export const GGML_FLOAT: Record<FloatDtype, DType> = { F32: "f32", F16: "f16", BF16: "bf16" };

export interface TensorInput {
  /** The tensor's elements in `dtype` (raw little-endian bytes or the matching typed array). */
  data: Uint8Array | Float32Array | Uint16Array;
  dtype: FloatDtype;
  lora?: LoraDelta;
}

export interface TensorMergeJob {
  name: string;
  /** PyTorch order. */
  shape: readonly number[];
  base?: TensorInput;
  models: readonly TensorInput[];
  params: readonly Params[];
  global: Params;
  t?: number;
  depth?: number;
  /** Run seed; each model's random draws are seeded from it, the tensor name and the model index. */
  seed?: number;
  outDtype: FloatDtype;
}

type Fill = [Tensor, () => Uint8Array | Float32Array | Uint16Array];

function buildInputs(g: Graph, job: TensorMergeJob, fills: Fill[]): MergeInputs {
  const ne = fromTorchShape(job.shape);
  const load = (input: TensorInput, label: string): Tensor => {
    const leaf = g.input(GGML_FLOAT[input.dtype], ne, label);
    fills.push([leaf, () => input.data]);
    let x = input.dtype === "F32" ? leaf : g.cast(leaf, "f32");
    if (input.lora) {
      const { a, b, r, scale } = input.lora;
      const [inFeatures, outFeatures] = ne;
      const la = g.input("f32", [inFeatures, r], `${label} lora_A`);
      const lb = g.input("f32", [r, outFeatures], `${label} lora_B`);
      fills.push([la, () => a], [lb, () => b]);
      x = g.add(x, g.scale(g.mulMat(g.cont(g.transpose(la)), lb), scale));
    }
    return x;
  };
  const seed = job.seed ?? 0;
  return {
    g,
    name: job.name,
    base: job.base && load(job.base, "base"),
    models: job.models.map((m, i) => load(m, `model ${i}`)),
    params: job.params,
    global: job.global,
    t: job.t ?? 0,
    depth: job.depth ?? 0,
    seed: (i) => hashSeed(seed, job.name, i),
    hostInput(shape: Shape4, fill: () => Float32Array) {
      const t = g.input("f32", shape, `host ${fills.length}`);
      fills.push([t, fill]);
      return t;
    },
  };
}

function run(g: Graph, fills: Fill[]): void {
  g.allocate();
  for (const [t, fill] of fills) t.setAll(fill());
  g.compute();
}

/** The merged tensor's bytes in job.outDtype. */
export function mergeTensor(backend: Backend, method: MergeMethod<unknown>, job: TensorMergeJob): Uint8Array {
  let plan: unknown;
  if (method.analyze) {
    const g = new Graph(backend);
    try {
      const fills: Fill[] = [];
      const x = buildInputs(g, job, fills);
      const outs = Object.entries(method.analyze(x));
      for (const [, t] of outs) g.output(t);
      if (outs.length) run(g, fills);
      const stats = Object.fromEntries(outs.map(([k, t]) => [k, t.getF32()]));
      plan = method.plan ? method.plan(stats, x) : undefined;
    } finally {
      g.free();
    }
  }
  const g = new Graph(backend);
  try {
    const fills: Fill[] = [];
    const x = buildInputs(g, job, fills);
    let out = method.merge(x, plan);
    if (out.dtype !== "f32") throw new Error(`${method.name}: ${job.name}: the method returned ${out.dtype}, not f32`);
    // A method may hand back an input unchanged; the graph still needs an op to run.
    if (fills.some(([leaf]) => leaf.ptr === out.ptr)) out = g.cont(out);
    if (job.outDtype !== "F32") out = g.cast(out, GGML_FLOAT[job.outDtype]);
    g.output(out);
    run(g, fills);
    return out.getBytes();
  } finally {
    g.free();
  }
}
