// Runs one merge method on one tensor, in chunks of rows so that ggml's working memory stays
// bounded however large the tensor: the inputs' stored bytes (f32/f16/bf16) go into ggml graph
// inputs as they are and are cast to f32 in the graph, an optional LoRA update is added, and the
// result is cast to the output dtype in the graph and copied into the output buffer.
//
// Two passes: `analyze` graphs run over every chunk and their outputs are summed (`sums`) or
// concatenated (`parts`) into whole-tensor statistics; `plan` turns those into scalars in JS;
// `merge` graphs, elementwise with the plan baked in, run over every chunk again. One graph is
// built per chunk size and reused for every chunk of that size.
import type { Backend } from "../engine/backend.ts";
import { Graph } from "../engine/graph.ts";
import { fromTorchShape, type DType, type Tensor } from "../engine/tensor.ts";
import type { AnalyzeOutputs, MergeInputs, MergeMethod, Params, Stats } from "./methods.ts";
import { bernoulliMask, hashSeed } from "./ops.ts";
import type { LoraDelta } from "./sources.ts";

export type FloatDtype = "F32" | "F16" | "BF16";
export const GGML_FLOAT: Record<FloatDtype, DType> = { F32: "f32", F16: "f16", BF16: "bf16" };
const BYTES: Record<FloatDtype, number> = { F32: 4, F16: 2, BF16: 2 };

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

export interface TensorMergeOptions {
  /** Elements per chunk (rounded to whole slices of the outermost dim); default 1M (4 MB of f32). */
  chunkElements?: number;
}

/**
 * Below this many elements a merge graph runs on one CPU thread: its ops take microseconds, and
 * ggml's per-op thread barriers cost more than that (milliseconds when the cores are shared).
 */
export const SINGLE_THREAD_ELEMENTS = 1 << 18;
const DEFAULT_CHUNK_ELEMENTS = 1 << 20;

/** Runs fn with the backend on one thread when the tensors are small (see SINGLE_THREAD_ELEMENTS). */
export function withThreadsFor<T>(backend: Backend, elements: number, fn: () => T): T {
  const threads = backend.threadCount;
  if (threads === 1 || elements >= SINGLE_THREAD_ELEMENTS || backend.device.kind !== "cpu") return fn();
  backend.setThreads(1);
  try {
    return fn();
  } finally {
    backend.setThreads(threads);
  }
}

/** Copies a computed (contiguous) graph tensor straight into a slice of a host buffer. */
function readInto(t: Tensor, target: Float32Array | Uint8Array): void {
  if (target.byteLength !== t.nbytes) throw new Error(`${t.describe()}: ${t.nbytes} bytes do not fill a ${target.byteLength}-byte slice`);
  t.ggml.ggml_backend_tensor_get(t.ptr, target, 0, target.byteLength);
}

/** Rows [start, start + count) of the tensor's outermost (PyTorch dim 0) axis. */
interface Chunk {
  start: number;
  count: number;
}

type Data = Uint8Array | Float32Array | Uint16Array;

/** The merged tensor's bytes in job.outDtype. */
export function mergeTensor(backend: Backend, method: MergeMethod<unknown>, job: TensorMergeJob, options: TensorMergeOptions = {}): Uint8Array {
  const shape = job.shape.length ? job.shape : [1];
  const elements = shape.reduce((a, b) => a * b, 1);
  // 1-D tensors stay whole: per-row statistics (filter_wise) treat them as one row.
  const outer = shape.length >= 2 ? shape[0]! : 1;
  const perOuter = elements / outer;
  const rowsPerChunk = Math.max(1, Math.floor((options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS) / perOuter));
  const chunks: Chunk[] = [];
  for (let start = 0; start < outer; start += rowsPerChunk) chunks.push({ start, count: Math.min(rowsPerChunk, outer - start) });
  const chunkShape = (c: Chunk) => (shape.length >= 2 ? [c.count, ...shape.slice(1)] : shape);
  const ne0 = shape[shape.length - 1]!;
  const rowsPerOuter = perOuter / ne0;
  const slice = <T extends Data>(data: T, c: Chunk, perUnit: number): T =>
    data.subarray(c.start * perUnit, (c.start + c.count) * perUnit) as T;

  const masks = new Map<number, Uint8Array>();
  const seed = job.seed ?? 0;
  const keepMask = (i: number, density: number) => {
    let mask = masks.get(i);
    if (!mask) masks.set(i, (mask = bernoulliMask(elements, density, hashSeed(seed, job.name, i))));
    return mask;
  };

  /** Runs `build` on every chunk, one graph per chunk size; `consume` gets each chunk's outputs. */
  const pass = <O>(build: (x: MergeInputs) => O, outputs: (o: O) => Tensor[], consume: (o: O, c: Chunk) => void) => {
    const graphs = new Map<number, { g: Graph; o: O; fills: ((c: Chunk) => Data)[]; leaves: Tensor[] }>();
    try {
      for (const chunk of chunks) {
        let entry = graphs.get(chunk.count);
        if (!entry) {
          const g = new Graph(backend);
          const fills: ((c: Chunk) => Data)[] = [];
          const leaves: Tensor[] = [];
          const input = (dtype: DType, ne: readonly number[], label: string, fill: (c: Chunk) => Data) => {
            const t = g.input(dtype, ne, label);
            leaves.push(t);
            fills.push(fill);
            return t;
          };
          const ne = fromTorchShape(chunkShape(chunk));
          const load = (x: TensorInput, label: string): Tensor => {
            const unitBytes = perOuter * (x.data instanceof Uint8Array ? BYTES[x.dtype] : 1);
            let t = input(GGML_FLOAT[x.dtype], ne, label, (c) => slice(x.data, c, unitBytes));
            if (x.dtype !== "F32") t = g.cast(t, "f32");
            if (x.lora) {
              const { a, b, r, scale } = x.lora;
              const la = input("f32", [ne[0], r], `${label} lora_A`, () => a);
              const lb = input("f32", [r, ne[1]], `${label} lora_B`, (c) => slice(b, c, r));
              t = g.add(t, g.scale(g.mulMat(g.cont(g.transpose(la)), lb), scale));
            }
            return t;
          };
          const x: MergeInputs = {
            g,
            name: job.name,
            base: job.base && load(job.base, "base"),
            models: job.models.map((m, i) => load(m, `model ${i}`)),
            params: job.params,
            global: job.global,
            t: job.t ?? 0,
            depth: job.depth ?? 0,
            keepMask: (i, density) => input("f32", ne, `keep ${i}`, (c) => Float32Array.from(slice(keepMask(i, density), c, perOuter))),
            rowInput: (values) => input("f32", [1, ne[1], ne[2], ne[3]], "rows", (c) => slice(values, c, rowsPerOuter)),
          };
          const o = build(x);
          const outs = outputs(o);
          const leafPtrs = new Set(leaves.map((t) => t.ptr));
          if (outs.some((t) => leafPtrs.has(t.ptr))) throw new Error(`${method.name}: ${job.name}: a graph output must be an op, not an input`);
          for (const t of outs) g.output(t);
          entry = { g, o, fills, leaves };
          graphs.set(chunk.count, entry);
          if (outs.length === 0) return;
          g.allocate();
        }
        entry.leaves.forEach((t, i) => t.setAll(entry!.fills[i]!(chunk)));
        entry.g.compute();
        consume(entry.o, chunk);
      }
    } finally {
      for (const { g } of graphs.values()) g.free();
    }
  };

  return withThreadsFor(backend, Math.min(elements, rowsPerChunk * perOuter), () => {
    let plan: unknown;
    if (method.analyze) {
      const stats: Stats = { sums: {}, parts: {} };
      pass((x) => method.analyze!(x), (o: AnalyzeOutputs) => [...Object.values(o.sums ?? {}), ...Object.values(o.parts ?? {})], (o, c) => {
        for (const [key, t] of Object.entries(o.sums ?? {})) {
          const values = t.getF32();
          const acc = (stats.sums[key] ??= new Float64Array(values.length));
          values.forEach((v, i) => { acc[i] += v; });
        }
        for (const [key, t] of Object.entries(o.parts ?? {})) {
          const perRowOfOuter = t.elements / c.count;
          const full = (stats.parts[key] ??= new Float32Array(perRowOfOuter * outer));
          readInto(t, full.subarray(c.start * perRowOfOuter, (c.start + c.count) * perRowOfOuter));
        }
      });
      plan = method.plan ? method.plan(stats, { name: job.name, params: job.params, global: job.global, elements }) : undefined;
    }
    const out = new Uint8Array(elements * BYTES[job.outDtype]);
    pass((x) => {
      let t = method.merge(x, plan);
      if (t.dtype !== "f32") throw new Error(`${method.name}: ${job.name}: the method returned ${t.dtype}, not f32`);
      if (job.outDtype !== "F32") return x.g.cast(t, GGML_FLOAT[job.outDtype]);
      // A method may hand back an f32 input unchanged; the graph still needs an op to run.
      if ([x.base, ...x.models].some((input) => input?.ptr === t.ptr)) t = x.g.cont(t);
      return t;
    }, (t) => [t], (t, c) => {
      const unit = perOuter * BYTES[job.outDtype];
      readInto(t, out.subarray(c.start * unit, (c.start + c.count) * unit));
    });
    return out;
  });
}
