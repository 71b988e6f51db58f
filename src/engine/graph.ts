// A compute graph: op tensors in a no-alloc ggml context, placed by ggml_gallocr in one backend
// buffer that is reused across computes. Every op checks shapes and types here first, because
// ggml reports the same mistakes by aborting the process.
import type { Backend } from "./backend.ts";
import { copyOp, GGML_ROPE_TYPE_NEOX, GGML_STATUS_SUCCESS, GGML_TENSOR_FLAG, placeInto, type Ptr, setSource, writeOpParamF32 } from "./native.ts";
import { TensorStore } from "./store.ts";
import { GGML_TYPE, isQuantized, Tensor, toShape4, type DType, type Shape4 } from "./tensor.ts";

export interface RopeOptions {
  /** Rotated dims per head (the head dim unless partial rotary). */
  nDims: number;
  /** GGML_ROPE_TYPE_NEOX rotates halves (HF's rotate_half); 0 rotates adjacent pairs. */
  mode?: number;
  freqBase: number;
  freqScale?: number;
  nCtxOrig?: number;
  extFactor?: number;
  attnFactor?: number;
  betaFast?: number;
  betaSlow?: number;
  /** Per-dimension divisors of the frequencies (llama3 / longrope scaling), f32 [nDims/2]. */
  freqFactors?: Tensor;
}

/** Ops whose backward pass ggml implements (ggml.c ggml_compute_backward), by ggml_op_desc name. */
const DIFFERENTIABLE_OPS = new Set([
  "NONE", "DUP", "ADD", "ADD1", "SUB", "MUL", "DIV", "SQR", "SQRT", "LOG", "SIN", "COS", "SUM", "SUM_ROWS",
  "REPEAT", "REPEAT_BACK", "RMS_NORM", "MUL_MAT", "SCALE", "SET", "CPY", "CONT", "RESHAPE", "VIEW",
  "PERMUTE", "TRANSPOSE", "GET_ROWS", "DIAG_MASK_INF", "DIAG_MASK_ZERO", "SOFT_MAX", "ROPE",
  "ABS", "SGN", "NEG", "STEP", "RELU", "SILU", "EXP", "EXPM1", "SOFTPLUS", "SWIGLU", "CROSS_ENTROPY_LOSS",
  // outputs of argmax and other integer ops never carry gradients
  "ARGMAX",
]);

/**
 * Matmuls below this many flops stay on ggml's CPU kernels: at ~35 GFLOP/s for ggml's one thread
 * against ~150 for BLAS on two, plus ~30 us to hand over, the crossover is near 1.4 MFLOP.
 */
export const BLAS_MIN_FLOPS = 1 << 20;

/** Ops that only reinterpret memory: computing them does nothing. */
const NO_WORK_OPS = new Set(["NONE", "VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"]);

/** On GPUs, softmax outputs of attention at least this large are recomputed in the backward pass (recomputeSoftmaxes). */
const RECOMPUTE_MIN_BYTES = 32 * 2 ** 20;

function isMatrix(t: Tensor): boolean {
  return t.ne[2] === 1 && t.ne[3] === 1;
}

/** Every (user, operand slot) of each tensor that `nodes` read. */
function operandUses(nodes: readonly Tensor[]): Map<Ptr, { user: Ptr; slot: number }[]> {
  const uses = new Map<Ptr, { user: Ptr; slot: number }[]>();
  for (const user of nodes) {
    user.operandSlots.forEach((src, slot) => {
      if (!src) return;
      const list = uses.get(src);
      if (list) list.push({ user: user.ptr, slot });
      else uses.set(src, [{ user: user.ptr, slot }]);
    });
  }
  return uses;
}

function sameShape(a: Tensor, b: Tensor): boolean {
  return a.ne.every((n, i) => n === b.ne[i]);
}

function canRepeat(small: Tensor, big: Tensor): boolean {
  return small.ne.every((n, i) => big.ne[i] % n === 0);
}

/**
 * Whether ggml's CPU OUT_PROD kernel is slow for a first operand with rows of `n` f32: it adds
 * rows of that length into each output row (vec_mad), which runs 4-6x below mul_mat for narrow
 * rows (n < 64: LoRA's rank-r factors) and 2x below for rows whose byte size is a multiple of
 * 2 KiB (n a multiple of 512: hidden sizes 512, 1024, 2048, 4096, 1536...; cache-set aliasing) or
 * very long rows (bench/matmul-micro.ts narrow and wide; docs/ENGINE-NOTES.md).
 */
export function slowOutProdRows(n: number): boolean {
  return n < 64 || n % 512 === 0 || n >= 8192;
}

/** How the backward pass computes one OUT_PROD node (see Graph.rewriteSlowOutProducts). */
export type OutProdForm = "out_prod" | "swapped" | "input_mul_mat" | "weight_mul_mat";

/**
 * The fastest arrangement of out_prod(a [n, k], b [m, k]) -> [n, m] measured on the CPU backend:
 * as is; `swapped` = cont(transpose(out_prod(b, a))) when b's rows are the fast ones; or mul_mat
 * over contiguous transposed copies: `input_mul_mat` = mul_mat(cont(transpose(a)), g) when b is
 * transpose(g) (an input gradient), `weight_mul_mat` = mul_mat(cont(transpose(a)), cont(transpose(b))).
 */
export function outProdForm(n: number, m: number, bIsTransposedView: boolean): OutProdForm {
  if (!slowOutProdRows(n)) return "out_prod";
  if (bIsTransposedView) return "input_mul_mat";
  if (n < 64) return m > n ? "swapped" : "out_prod";
  return slowOutProdRows(m) ? "weight_mul_mat" : "swapped";
}

export class Graph {
  private readonly ctx: Ptr;
  /** The graph as built: after backward(), ggml's gradient table lives here (grad()). */
  private readonly graph: Ptr;
  /** The graph that is allocated and computed: `graph`, or its rewrite after backward(). */
  private exec: Ptr;
  private readonly maxNodes: number;
  /** OUT_PROD nodes of the backward pass computed another way, by form (rewriteSlowOutProducts). */
  readonly outProdRewrites: Record<Exclude<OutProdForm, "out_prod">, number> = { swapped: 0, input_mul_mat: 0, weight_mul_mat: 0 };
  /** Gradients written into their accumulators with accumulate: false: computed there, or copied. */
  readonly accumulatorWrites = { computed: 0, copied: 0 };
  /** Batched OUT_PROD nodes computed by BLAS one matrix at a time (outProdSlicesToBlas). */
  slicedOutProds = 0;
  /** Nodes the graph can still take while the backward pass is rewritten. */
  private nodeRoom = 0;
  /** MUL_MAT nodes handed to BLAS as OUT_PROD (narrowMulMatToBlas). */
  narrowMulMats = 0;
  private galloc: Ptr = 0n;
  /** With a BLAS backend: runs of consecutive nodes and the backend that computes each (planSplits). */
  private splits: { backend: Ptr; first: number; graph: Ptr }[] = [];
  private splitCtx: Ptr = 0n;
  private readonly outputs: Tensor[] = [];
  /** Small persistent tensors the graph owns (the loss seed of the backward pass). */
  private readonly own: TensorStore;
  private lossSeed?: Tensor;
  private built = false;

  /**
   * `rewriteOutProducts: false` keeps ggml's OUT_PROD nodes as autograd emits them (for tests and
   * A/B timing; see rewriteSlowOutProducts). `frozenWeightCopy` says in which type a frozen
   * half-precision weight is transposed for its input gradient: f32 on the CPU backend (measured
   * faster there), the weight's own type elsewhere (so that a GPU's mul_mat runs it on tensor cores).
   */
  constructor(readonly backend: Backend, private readonly options: { maxNodes?: number; grads?: boolean; rewriteOutProducts?: boolean; frozenWeightCopy?: "f32" | "weight-type" } = {}) {
    const { ggml } = backend;
    const maxNodes = options.maxNodes ?? 8192;
    const grads = options.grads ?? false;
    // Each node needs a tensor header; a backward pass roughly triples the node count.
    const tensors = maxNodes * (grads ? 4 : 2);
    // With gradients, backward() adds a second, rewritten graph without gradient tables.
    const memSize = tensors * ggml.ggml_tensor_overhead() + ggml.ggml_graph_overhead_custom(maxNodes, grads) +
      (grads ? ggml.ggml_graph_overhead_custom(maxNodes, false) : 0);
    this.ctx = ggml.ggml_init({ mem_size: memSize, mem_buffer: null, no_alloc: true });
    if (!this.ctx) throw new Error("ggml_init failed for a graph context");
    this.graph = ggml.ggml_new_graph_custom(this.ctx, maxNodes, grads);
    this.exec = this.graph;
    this.maxNodes = maxNodes;
    this.own = new TensorStore(backend, "graph", 16);
  }

  private get ggml() {
    return this.backend.ggml;
  }

  private wrap(ptr: Ptr): Tensor {
    return Tensor.wrap(this.ggml, ptr);
  }

  private fail(op: string, message: string, ...tensors: Tensor[]): never {
    throw new Error(`${op}: ${message} (${tensors.map((t) => t.describe()).join("; ")})`);
  }

  private requireFloat(op: string, ...tensors: Tensor[]): void {
    for (const t of tensors) if (t.dtype !== "f32") this.fail(op, "expects f32 operands", t);
  }

  // ---- leaves --------------------------------------------------------------------------------

  /** A graph input: memory placed by the allocator, data set after allocate() and before compute(). */
  input(dtype: DType, ne: readonly number[], name: string): Tensor {
    const [n0, n1, n2, n3] = toShape4(ne);
    const t = this.wrap(this.ggml.ggml_new_tensor_4d(this.ctx, GGML_TYPE[dtype], n0, n1, n2, n3)).setName(name);
    this.ggml.ggml_set_input(t.ptr);
    return t;
  }

  /**
   * Marks a tensor (a graph input or a store tensor) as a variable to differentiate. ggml files a
   * tensor as a parameter node or a constant leaf when it is first expanded, so this must come
   * before output() or backward().
   */
  param(t: Tensor): Tensor {
    if (t.dtype !== "f32") this.fail("param", "trainable tensors must be f32", t);
    if (this.outputs.length) this.fail("param", "mark parameters before output() or backward() expand the graph", t);
    this.ggml.ggml_set_param(t.ptr);
    return t;
  }

  // ---- elementwise ---------------------------------------------------------------------------

  /** a + b, b broadcast over a when each of b's dims divides a's. */
  add(a: Tensor, b: Tensor): Tensor {
    if (!canRepeat(b, a)) this.fail("add", "b must broadcast to a", a, b);
    if (a.dtype !== "f32" && a.dtype !== "f16") this.fail("add", "a must be a float tensor", a);
    return this.wrap(this.ggml.ggml_add(this.ctx, a.ptr, b.ptr));
  }

  /** a * b, b broadcast over a (the backward of mul handles broadcasting). */
  mul(a: Tensor, b: Tensor): Tensor {
    if (!canRepeat(b, a)) this.fail("mul", "b must broadcast to a", a, b);
    this.requireFloat("mul", a, b);
    return this.wrap(this.ggml.ggml_mul(this.ctx, a.ptr, b.ptr));
  }

  /** a - b with equal shapes: ggml's backward of a broadcast sub is wrong, so repeat explicitly. */
  sub(a: Tensor, b: Tensor): Tensor {
    if (!sameShape(a, b)) this.fail("sub", "shapes must match (use repeat to broadcast)", a, b);
    this.requireFloat("sub", a, b);
    return this.wrap(this.ggml.ggml_sub(this.ctx, a.ptr, b.ptr));
  }

  /** a / b with equal shapes, for the same reason as sub. */
  div(a: Tensor, b: Tensor): Tensor {
    if (!sameShape(a, b)) this.fail("div", "shapes must match (use repeat to broadcast)", a, b);
    this.requireFloat("div", a, b);
    return this.wrap(this.ggml.ggml_div(this.ctx, a.ptr, b.ptr));
  }

  scale(a: Tensor, s: number): Tensor {
    if (!Number.isFinite(s)) this.fail("scale", `factor must be finite, got ${s}`, a);
    this.requireFloat("scale", a);
    return this.wrap(this.ggml.ggml_scale(this.ctx, a.ptr, s));
  }

  /**
   * a *= s in a's own memory, where s is set before each compute with setScale (a gradient scale
   * known only after the backward pass, without a second buffer or a broadcast MUL).
   */
  scaleInPlace(a: Tensor): Tensor {
    this.requireFloat("scaleInPlace", a);
    return this.wrap(this.ggml.ggml_scale_inplace(this.ctx, a.ptr, 1));
  }

  static setScale(node: Tensor, s: number): void {
    if (!Number.isFinite(s)) throw new Error(`setScale: factor must be finite, got ${s}`);
    writeOpParamF32(node.ptr, 0, s);
  }

  /** a * s + b (the bias is a constant; ggml's backward only scales). */
  scaleBias(a: Tensor, s: number, b: number): Tensor {
    if (!Number.isFinite(s) || !Number.isFinite(b)) this.fail("scaleBias", `factors must be finite, got ${s}, ${b}`, a);
    this.requireFloat("scaleBias", a);
    return this.wrap(this.ggml.ggml_scale_bias(this.ctx, a.ptr, s, b));
  }

  private unary(name: "sqr" | "sqrt" | "log" | "exp" | "abs" | "sgn" | "neg" | "tanh" | "softplus" | "silu" | "relu", a: Tensor): Tensor {
    this.requireFloat(name, a);
    return this.wrap(this.ggml[`ggml_${name}`](this.ctx, a.ptr));
  }
  sqr(a: Tensor) { return this.unary("sqr", a); }
  sqrt(a: Tensor) { return this.unary("sqrt", a); }
  log(a: Tensor) { return this.unary("log", a); }
  exp(a: Tensor) { return this.unary("exp", a); }
  abs(a: Tensor) { return this.unary("abs", a); }
  sgn(a: Tensor) { return this.unary("sgn", a); }
  neg(a: Tensor) { return this.unary("neg", a); }
  tanh(a: Tensor) { return this.unary("tanh", a); }
  softplus(a: Tensor) { return this.unary("softplus", a); }
  silu(a: Tensor) { return this.unary("silu", a); }
  relu(a: Tensor) { return this.unary("relu", a); }

  /** silu(gate) * up, ggml's fused SwiGLU (differentiable in its split form). */
  swiglu(gate: Tensor, up: Tensor): Tensor {
    if (!sameShape(gate, up)) this.fail("swiglu", "gate and up must have the same shape", gate, up);
    this.requireFloat("swiglu", gate, up);
    return this.wrap(this.ggml.ggml_swiglu_split(this.ctx, gate.ptr, up.ptr));
  }

  // ---- reductions and broadcasting -----------------------------------------------------------

  sum(a: Tensor): Tensor {
    this.requireFloat("sum", a);
    return this.wrap(this.ggml.ggml_sum(this.ctx, a.ptr));
  }

  /** Sums along ne[0]: [n0, n1, n2, n3] -> [1, n1, n2, n3]. */
  sumRows(a: Tensor): Tensor {
    this.requireFloat("sumRows", a);
    return this.wrap(this.ggml.ggml_sum_rows(this.ctx, a.ptr));
  }

  /** Tiles a to the shape of like. */
  repeat(a: Tensor, like: Tensor): Tensor {
    if (!canRepeat(a, like)) this.fail("repeat", "each dim of a must divide the target's", a, like);
    return this.wrap(this.ggml.ggml_repeat(this.ctx, a.ptr, like.ptr));
  }

  argmax(a: Tensor): Tensor {
    if (a.ne[2] !== 1 || a.ne[3] !== 1) this.fail("argmax", "expects a matrix", a);
    return this.wrap(this.ggml.ggml_argmax(this.ctx, a.ptr));
  }

  // ---- linear algebra ------------------------------------------------------------------------

  /** ggml_mul_mat: a [k, m, ...] and b [k, n, ...] give [m, n, ...] (b @ a^T in row-major terms). */
  mulMat(a: Tensor, b: Tensor): Tensor {
    if (a.ne[0] !== b.ne[0]) this.fail("mulMat", `inner dims differ (${a.ne[0]} vs ${b.ne[0]})`, a, b);
    if (b.ne[2] % a.ne[2] !== 0 || b.ne[3] % a.ne[3] !== 0) this.fail("mulMat", "a's batch dims must divide b's", a, b);
    if (b.dtype !== "f32") this.fail("mulMat", "b must be f32", b);
    return this.wrap(this.ggml.ggml_mul_mat(this.ctx, a.ptr, b.ptr));
  }

  /**
   * ggml_out_prod: a [n, k, ...] and b [m, k, ...] give [n, m, ...], out[i, j] = sum_l a[i, l] b[j, l]
   * (what ggml's autograd emits for mul_mat's gradients; it has no backward of its own). b is f32;
   * a may be a half-precision or quantized weight where the backend supports it.
   */
  outProd(a: Tensor, b: Tensor): Tensor {
    if (a.ne[1] !== b.ne[1]) this.fail("outProd", `shared dims differ (${a.ne[1]} vs ${b.ne[1]})`, a, b);
    if (b.ne[2] % a.ne[2] !== 0 || b.ne[3] % a.ne[3] !== 0) this.fail("outProd", "a's batch dims must divide b's", a, b);
    this.requireFloat("outProd", b);
    return this.wrap(this.ggml.ggml_out_prod(this.ctx, a.ptr, b.ptr));
  }

  /** Rows of a (any dtype, dequantised to f32) picked by i32 indices: [n0, rows] x [k] -> [n0, k]. */
  getRows(a: Tensor, indices: Tensor): Tensor {
    if (indices.dtype !== "i32") this.fail("getRows", "indices must be i32", indices);
    if (indices.ne[1] !== a.ne[2] || indices.ne[2] !== a.ne[3] || indices.ne[3] !== 1) {
      this.fail("getRows", "index batch dims must match the data's outer dims", a, indices);
    }
    return this.wrap(this.ggml.ggml_get_rows(this.ctx, a.ptr, indices.ptr));
  }

  // ---- normalisation, attention --------------------------------------------------------------

  rmsNorm(a: Tensor, eps: number): Tensor {
    this.requireFloat("rmsNorm", a);
    return this.wrap(this.ggml.ggml_rms_norm(this.ctx, a.ptr, eps));
  }

  /**
   * softmax(a * scale + mask) along ne[0]. The mask (f32, [n0, >=n1, broadcast over dims 2, 3])
   * is data, not a variable: ggml has no gradient for it.
   */
  softMax(a: Tensor, mask: Tensor | null, scale = 1): Tensor {
    this.requireFloat("softMax", a);
    if (mask) {
      if (mask.dtype !== "f32" && mask.dtype !== "f16") this.fail("softMax", "mask must be f32 or f16", mask);
      if (mask.ne[0] !== a.ne[0] || mask.ne[1] < a.ne[1] || a.ne[2] % mask.ne[2] !== 0 || a.ne[3] % mask.ne[3] !== 0) {
        this.fail("softMax", "mask must be [n0, >=n1] and broadcast over dims 2 and 3", a, mask);
      }
    }
    return this.wrap(this.ggml.ggml_soft_max_ext(this.ctx, a.ptr, mask?.ptr ?? null, scale, 0));
  }

  /** Sets entries above the diagonal (past n_past) to -inf: the causal mask, differentiable. */
  diagMaskInf(a: Tensor, nPast = 0): Tensor {
    this.requireFloat("diagMaskInf", a);
    return this.wrap(this.ggml.ggml_diag_mask_inf(this.ctx, a.ptr, nPast));
  }

  /** Rotary embedding of a [headDim, heads, tokens, batch] at i32 positions [tokens]. */
  rope(a: Tensor, positions: Tensor, o: RopeOptions): Tensor {
    this.requireFloat("rope", a);
    if (positions.dtype !== "i32" || positions.ne[0] !== a.ne[2]) this.fail("rope", "positions must be i32 with one entry per token (ne[2])", a, positions);
    if (o.nDims > a.ne[0] || o.nDims % 2 !== 0) this.fail("rope", `n_dims ${o.nDims} must be even and <= head dim`, a);
    if (o.freqFactors && (o.freqFactors.dtype !== "f32" || o.freqFactors.ne[0] < o.nDims / 2)) {
      this.fail("rope", "freq factors must be f32 with n_dims/2 entries", o.freqFactors);
    }
    return this.wrap(this.ggml.ggml_rope_ext(this.ctx, a.ptr, positions.ptr, o.freqFactors?.ptr ?? null,
      o.nDims, o.mode ?? GGML_ROPE_TYPE_NEOX, o.nCtxOrig ?? 0, o.freqBase, o.freqScale ?? 1,
      o.extFactor ?? 0, o.attnFactor ?? 1, o.betaFast ?? 32, o.betaSlow ?? 1));
  }

  // ---- views and copies ----------------------------------------------------------------------

  reshape(a: Tensor, ne: readonly number[]): Tensor {
    const s = toShape4(ne);
    if (s[0] * s[1] * s[2] * s[3] !== a.elements) this.fail("reshape", `cannot reshape to [${s.join(", ")}]`, a);
    if (!a.isContiguous) this.fail("reshape", "needs a contiguous tensor (use cont first)", a);
    return this.wrap(this.ggml.ggml_reshape_4d(this.ctx, a.ptr, ...s));
  }

  /** A strided view; strides and offset in bytes. */
  view(a: Tensor, ne: readonly number[], nb: readonly [number, number, number], offset: number): Tensor {
    const s = toShape4(ne);
    const last = offset + (s[0] - 1) * a.nb[0] + (s[1] - 1) * nb[0] + (s[2] - 1) * nb[1] + (s[3] - 1) * nb[2];
    if (offset < 0 || last >= a.nbytes) this.fail("view", `view [${s.join(", ")}] at ${offset} runs past the tensor`, a);
    return this.wrap(this.ggml.ggml_view_4d(this.ctx, a.ptr, ...s, nb[0], nb[1], nb[2], offset));
  }

  /** ggml_permute: source dim i moves to position axes[i]. */
  permute(a: Tensor, axes: readonly [number, number, number, number]): Tensor {
    if ([...axes].sort().join() !== "0,1,2,3") this.fail("permute", `axes [${axes.join(", ")}] are not a permutation of 0..3`, a);
    return this.wrap(this.ggml.ggml_permute(this.ctx, a.ptr, ...axes));
  }

  transpose(a: Tensor): Tensor {
    return this.wrap(this.ggml.ggml_transpose(this.ctx, a.ptr));
  }

  cont(a: Tensor): Tensor {
    return this.wrap(this.ggml.ggml_cont(this.ctx, a.ptr));
  }

  /** Writes a into dst (a persistent tensor, converting the type) when the graph runs. */
  copyInto(a: Tensor, dst: Tensor): Tensor {
    if (a.elements !== dst.elements) this.fail("copyInto", "element counts differ", a, dst);
    return this.output(this.wrap(this.ggml.ggml_cpy(this.ctx, a.ptr, dst.ptr)));
  }

  /**
   * One AdamW update of param in place from grad, with persistent moments m, v and the f32[7]
   * hyper-parameters [lr, beta1, beta2, eps, weight decay, 1/(1-beta1^t), 1/(1-beta2^t)].
   */
  adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hyper: Tensor): Tensor {
    for (const t of [grad, m, v]) if (!sameShape(param, t) || t.dtype !== "f32") this.fail("adamwStep", "grad and moments must be f32 shaped like the parameter", param, t);
    if (hyper.elements !== 7 || hyper.dtype !== "f32") this.fail("adamwStep", "hyper-parameters must be f32[7]", hyper);
    if (!param.isParam) this.fail("adamwStep", "the tensor is not marked as a parameter (Graph.param)", param);
    return this.output(this.wrap(this.ggml.ggml_opt_step_adamw(this.ctx, param.ptr, grad.ptr, m.ptr, v.ptr, hyper.ptr)));
  }

  cast(a: Tensor, dtype: DType): Tensor {
    return this.wrap(this.ggml.ggml_cast(this.ctx, a.ptr, GGML_TYPE[dtype]));
  }

  // ---- building, allocating, computing -------------------------------------------------------

  /** Adds t and everything it depends on to the graph, and keeps its memory readable after compute. */
  output(t: Tensor): Tensor {
    if (this.built) throw new Error("output: the graph is already allocated");
    this.ggml.ggml_set_output(t.ptr);
    this.ggml.ggml_build_forward_expand(this.graph, t.ptr);
    if (this.exec !== this.graph) this.ggml.ggml_build_forward_expand(this.exec, t.ptr);
    this.outputs.push(t);
    return t;
  }

  /** The nodes that compute() runs, in order. */
  get nodes(): Tensor[] {
    return this.nodesOf(this.exec);
  }

  private nodesOf(graph: Ptr): Tensor[] {
    const n = this.ggml.ggml_graph_n_nodes(graph);
    return Array.from({ length: n }, (_, i) => this.wrap(this.ggml.ggml_graph_node(graph, i)));
  }

  /**
   * Expands the backward pass of the scalar f32 `loss` w.r.t. every tensor marked as a parameter
   * (see `param`). The loss seed lives in its own buffer, because an allocator-placed seed could be
   * overwritten before backward reads it. With `accumulatorOf`, a parameter's gradient is added
   * into a persistent tensor on every compute (gradient accumulation); with `accumulate: false`
   * as well, each compute overwrites the accumulators instead, so they need no zeroing. Softmax
   * outputs of attention scores of at least `recomputeBytes` (default: 32 MB on GPUs, never on
   * the CPU) are recomputed for the backward pass instead of kept (recomputeSoftmaxes).
   */
  backward(loss: Tensor, accumulatorOf?: (param: Tensor) => Tensor | undefined, options: { accumulate?: boolean; recomputeBytes?: number } = {}): void {
    if (loss.elements !== 1 || loss.dtype !== "f32") this.fail("backward", "the loss must be a scalar f32", loss);
    if (this.built) throw new Error("backward: the graph is already allocated");
    const { ggml } = this;
    this.output(loss);
    const nodes = this.nodes;
    const unsupported = [...new Set(nodes.map((n) => ggml.ggml_op_desc(n.ptr)).filter((op) => !DIFFERENTIABLE_OPS.has(op)))];
    if (unsupported.length) {
      throw new Error(`backward: ggml has no gradient for ${unsupported.join(", ")}; use the compositions in engine/compose.ts`);
    }
    ggml.ggml_set_loss(loss.ptr);
    this.lossSeed = this.own.tensor("f32", [1], "loss seed");
    this.own.allocate();
    this.lossSeed.setAll(new Float32Array([1]));
    const gradAccs = new BigUint64Array(nodes.length);
    gradAccs[nodes.findIndex((n) => n.ptr === loss.ptr)] = this.lossSeed.ptr;
    if (accumulatorOf) {
      nodes.forEach((n, i) => {
        if (!n.isParam) return;
        const acc = accumulatorOf(n);
        if (acc && !sameShape(acc, n)) this.fail("backward", "a gradient accumulator must have its parameter's shape", n, acc);
        if (acc) gradAccs[i] = acc.ptr;
      });
    }
    ggml.ggml_build_backward_expand(this.ctx, this.graph, gradAccs as unknown as Ptr);
    // On the CPU memory is plentiful and compute is not: recomputing cost 12% of a step at 1,024 tokens.
    const recomputeBytes = options.recomputeBytes ?? (this.backend.device.kind === "cpu" ? Infinity : RECOMPUTE_MIN_BYTES);
    const recomputed = this.recomputeSoftmaxes(new Set(nodes.map((n) => n.ptr)), recomputeBytes);
    if (this.rewriteSlowOutProducts() + recomputed.size > 0) {
      // Re-expanding every node in the old order puts each new operand right before its first user.
      this.exec = ggml.ggml_new_graph_custom(this.ctx, this.maxNodes, false);
      for (const node of this.nodesOf(this.graph)) ggml.ggml_build_forward_expand(this.exec, node.ptr);
    }
    if (accumulatorOf && options.accumulate === false) {
      const users = operandUses(this.nodesOf(this.graph));
      nodes.forEach((n, i) => {
        if (gradAccs[i] && n.ptr !== loss.ptr) this.overwriteAccumulator(n, this.wrap(gradAccs[i] as Ptr), users);
      });
    }
    this.protectSoftmaxOutputs(recomputed);
  }

  /**
   * ggml adds a parameter's first gradient term into its accumulator in place (ADD(acc, term)),
   * which needs the accumulator zeroed before every step and reads it once more. Instead the term
   * is computed straight into the accumulator's memory and the ADD becomes a view that does no
   * work; a term that cannot be placed there (a view, or one with other users) is copied in.
   * Later terms of the same parameter still add in place. Saves a zeroing and a read of every
   * gradient per step (~1.5 ms of a 90 ms cpu-small step).
   */
  private overwriteAccumulator(param: Tensor, acc: Tensor, users: ReturnType<typeof operandUses>): void {
    const { ggml, ctx } = this;
    const grad = ggml.ggml_graph_get_grad(this.graph, param.ptr);
    // The parameter gets no gradient: nothing ever writes its accumulator, which stays zero.
    if (!grad || grad === acc.ptr) return;
    let first = this.wrap(grad);
    while (first.source(0).ptr !== acc.ptr) {
      if (ggml.ggml_op_desc(first.ptr) !== "ADD") this.fail("backward", `internal: unexpected ${ggml.ggml_op_desc(first.ptr)} in a gradient chain`, first);
      first = first.source(0);
    }
    if (ggml.ggml_op_desc(first.ptr) !== "ADD") this.fail("backward", `internal: a gradient starts with ${ggml.ggml_op_desc(first.ptr)}`, first);
    const term = first.source(1);
    const placeable = !NO_WORK_OPS.has(ggml.ggml_op_desc(term.ptr)) && !term.viewSource &&
      (term.flags & (GGML_TENSOR_FLAG.INPUT | GGML_TENSOR_FLAG.OUTPUT | GGML_TENSOR_FLAG.PARAM | GGML_TENSOR_FLAG.LOSS)) === 0 &&
      users.get(term.ptr)?.length === 1 && sameShape(term, acc) && term.dtype === "f32" && term.isContiguous;
    if (placeable) {
      placeInto(term.ptr, acc.ptr);
      copyOp(first.ptr, ggml.ggml_reshape(ctx, term.ptr, first.ptr));
      this.accumulatorWrites.computed++;
    } else {
      copyOp(first.ptr, ggml.ggml_cpy(ctx, term.ptr, acc.ptr));
      this.accumulatorWrites.copied++;
    }
  }

  /**
   * ggml's backward of mul_mat emits OUT_PROD for both operands' gradients, and the CPU kernel is
   * slow for some row lengths (slowOutProdRows). Such nodes are rewritten in place into the
   * arrangement outProdForm picks. Each node keeps its identity (gradient table, accumulators,
   * flags) and computes the same values up to float rounding; the computed graph is rebuilt in
   * the original order, with the new operands right before their users. None that a BLAS backend
   * takes as they are is rewritten; batched products (attention) only into a mul_mat for BLAS; and
   * on GPU backends only the input gradients through frozen half-precision or quantized weights.
   */
  private rewriteSlowOutProducts(): number {
    const { ggml, ctx } = this;
    if (this.options.rewriteOutProducts === false) return 0;
    // The speeds behind outProdForm are the CPU backend's; GPU backends run an f32 OUT_PROD as a
    // GEMM, but CUDA has no OUT_PROD for f16, bf16 or quantized weights, so those are rewritten everywhere.
    const cpu = this.backend.device.kind === "cpu";
    const copyType = this.options.frozenWeightCopy ?? (cpu ? "f32" : "weight-type");
    const nodes = this.nodesOf(this.graph);
    this.nodeRoom = this.maxNodes - nodes.length;
    let rewritten = 0;
    for (const node of nodes) {
      const op = ggml.ggml_op_desc(node.ptr);
      if (op === "MUL_MAT" && this.narrowMulMatToBlas(node)) rewritten++;
      if (op !== "OUT_PROD") continue;
      const a = node.source(0);
      const b = node.source(1);
      if (!a.isContiguous || b.dtype !== "f32") continue;
      const g = ggml.ggml_op_desc(b.ptr) === "TRANSPOSE" ? b.source(0) : undefined;
      if (!b.isContiguous && !g?.isContiguous) continue;
      // BLAS runs an f32 OUT_PROD as one sgemm with the transpose folded in: faster than any rewrite.
      if (this.runsOnBlas(node)) continue;
      if (!isMatrix(a) || !isMatrix(b)) {
        // Attention's batched products: BLAS takes no OUT_PROD of them; one matrix at a time it
        // does, or else an input gradient as a mul_mat over one transposed copy.
        if (!this.backend.blas || a.dtype !== "f32") continue;
        if (this.outProdSlicesToBlas(node, g)) {
          rewritten++;
          continue;
        }
        if (!g) continue;
        const replacement = ggml.ggml_mul_mat(ctx, this.transposeCopy(a.ptr), g.ptr);
        if (!this.runsOnBlas(this.wrap(replacement))) continue;
        copyOp(node.ptr, replacement);
        this.outProdRewrites.input_mul_mat++;
        rewritten++;
        continue;
      }
      // A frozen half-precision or quantized weight's input gradient: OUT_PROD converts a row of
      // the weight to f32 for every token (20-35x slower than mul_mat for f16, 3x for q8_0, no
      // kernel at all for bf16), so the weight is converted once, transposed, to f32. Same f32
      // arithmetic on the same weight values.
      const half = a.dtype !== "f32";
      if (half ? b.isContiguous : !cpu) continue;
      const form = half ? "input_mul_mat" : outProdForm(a.ne[0], b.ne[0], !b.isContiguous);
      if (form === "out_prod") continue;
      const transposedWeight = () => !half ? this.transposeCopy(a.ptr)
        : isQuantized(a.dtype) ? this.transposeCopy(ggml.ggml_cast(ctx, a.ptr, GGML_TYPE.f32))
        : copyType === "weight-type" ? this.transposeCopy(a.ptr)
        : ggml.ggml_cast(ctx, ggml.ggml_transpose(ctx, a.ptr), GGML_TYPE.f32);
      const replacement = form === "swapped" ? this.transposeCopy(ggml.ggml_out_prod(ctx, b.ptr, a.ptr))
        : form === "input_mul_mat" ? ggml.ggml_mul_mat(ctx, transposedWeight(), g!.ptr)
        : ggml.ggml_mul_mat(ctx, transposedWeight(), this.transposeCopy(b.ptr));
      const r = this.wrap(replacement);
      if (!sameShape(r, node) || r.dtype !== node.dtype) this.fail("backward", `internal: the ${form} rewrite of out_prod changed the shape`, node, r);
      copyOp(node.ptr, replacement);
      this.outProdRewrites[form]++;
      rewritten++;
    }
    return rewritten;
  }

  /**
   * A matmul with a side under 32 (LoRA's rank-r products x A and B h), which ggml-blas refuses
   * as MUL_MAT and ggml's kernel runs at ~16 GFLOP/s, becomes the same product as an OUT_PROD of
   * the transposed operands, which BLAS takes as one sgemm: 12 ms less per cpu-small LoRA step.
   */
  private narrowMulMatToBlas(node: Tensor): boolean {
    const { ggml, ctx } = this;
    if (!this.backend.blas || this.runsOnBlas(node)) return false;
    const a = node.source(0);
    const b = node.source(1);
    if (![a, b].every((t) => t.dtype === "f32" && t.isContiguous && isMatrix(t))) return false;
    // mul_mat(a [k, n], b [k, m]) = out_prod(a^T [n, k], b^T [m, k]); b^T stays a view, which
    // BLAS reads as a transposed operand.
    const replacement = this.wrap(ggml.ggml_out_prod(ctx, this.transposeCopy(a.ptr), ggml.ggml_transpose(ctx, b.ptr)));
    if (!sameShape(replacement, node) || !this.runsOnBlas(replacement)) return false;
    copyOp(node.ptr, replacement.ptr);
    this.narrowMulMats++;
    return true;
  }

  /**
   * Attention's batched gradients have no BLAS form but a mul_mat over transposed copies, and
   * ggml's own batched OUT_PROD runs them at ~60 GFLOP/s. Each matrix of the batch becomes its own
   * 2-D OUT_PROD, which BLAS runs as one sgemm with the transposes folded in (b may be the
   * transpose of a contiguous `g`), written straight into its slice of the result: a new tensor
   * `base`, allocated where the node was and doing no work itself, precedes the slices (each slice
   * names the one before in an operand slot OUT_PROD ignores, so they stay in order), and the node
   * becomes a view of base after the last slice, so its users read the assembled result.
   * cpu-small step: dK, dV 4.4 -> 2.3 ms; dQ, d(scores) lose their transposed copies.
   */
  private outProdSlicesToBlas(node: Tensor, g?: Tensor): boolean {
    const { ggml, ctx } = this;
    const a = node.source(0);
    const b = node.source(1);
    if (!(g ?? b).isContiguous || !node.isContiguous || node.dtype !== "f32") return false;
    const [, , n2, n3] = node.ne;
    const matrix = (t: Tensor, i2: number, i3: number) =>
      ggml.ggml_view_4d(ctx, t.ptr, t.ne[0], t.ne[1], 1, 1, t.nb[1], t.nb[1] * t.ne[1], t.nb[1] * t.ne[1], i2 * t.nb[2] + i3 * t.nb[3]);
    const slice = (i2: number, i3: number) => ggml.ggml_out_prod(ctx,
      matrix(a, Math.floor(i2 / (n2 / a.ne[2])), Math.floor(i3 / (n3 / a.ne[3]))),
      g ? ggml.ggml_transpose(ctx, matrix(g, i2, i3)) : matrix(b, i2, i3));
    // Every slice adds its product and two or three views to the graph.
    const added = n2 * n3 * (g ? 4 : 3) + 2;
    if (added > this.nodeRoom) return false;
    const first = slice(0, 0);
    if (!this.runsOnBlas(this.wrap(first))) return false;
    this.nodeRoom -= added;
    const base = this.wrap(ggml.ggml_new_tensor_4d(ctx, GGML_TYPE.f32, ...node.ne));
    // A VIEW op with no view source: allocated like any node, skipped by every backend.
    copyOp(base.ptr, matrix(a, 0, 0));
    let previous = base.ptr;
    for (let i3 = 0; i3 < n3; i3++) {
      for (let i2 = 0; i2 < n2; i2++) {
        const s = i2 + i3 === 0 ? first : slice(i2, i3);
        placeInto(s, base.ptr, i2 * node.nb[2] + i3 * node.nb[3]);
        setSource(s, 2, previous);
        previous = s;
      }
    }
    copyOp(node.ptr, ggml.ggml_view_4d(ctx, previous, 1, 1, 1, 1, 4, 4, 4, 0));
    placeInto(node.ptr, base.ptr);
    this.slicedOutProds++;
    return true;
  }

  /** A contiguous transposed copy of a raw tensor, for the backward rewrites. */
  private transposeCopy(t: Ptr): Ptr {
    return this.ggml.ggml_cont(this.ctx, this.ggml.ggml_transpose(this.ctx, t));
  }

  /**
   * Attention keeps its softmax output (keys x queries x heads per row) from the forward pass to
   * the backward pass: 128 MB per layer and row for a 1B Llama at 1,024 tokens, most of the
   * training graph's memory. For each softmax over a matmul (the scores) whose output has at least
   * `minBytes`, the backward pass reads a recomputed copy instead (the matmul and softmax again,
   * from the same operands, so the same values), placed right before its first backward user, and
   * the forward output is freed after the forward pass last reads it. Returns the recomputed outputs.
   */
  private recomputeSoftmaxes(forward: Set<Ptr>, minBytes: number): Set<Ptr> {
    const { ggml, ctx } = this;
    const recomputed = new Set<Ptr>();
    const all = this.nodesOf(this.graph);
    const isActivation = (t: Tensor) => ggml.ggml_op_desc(t.ptr) !== "NONE";
    const targets = all.flatMap((y) => {
      if (!forward.has(y.ptr) || ggml.ggml_op_desc(y.ptr) !== "SOFT_MAX" || y.nbytes < minBytes) return [];
      const x = y.source(0);
      const scores = this.wrap(x.viewSource ?? x.ptr);
      // Attention's scores (a product of two activations), not the LM head's logits over a weight.
      const attention = ggml.ggml_op_desc(scores.ptr) === "MUL_MAT" && isActivation(scores.source(0)) && isActivation(scores.source(1));
      return attention ? [{ y, x, scores }] : [];
    });
    if (targets.length === 0) return recomputed;
    // Every backward node's operand slots, and the views of each tensor, found once.
    const backwardUses = operandUses(all.filter((n) => !forward.has(n.ptr)));
    const viewsOf = new Map<Ptr, Tensor[]>();
    for (const n of all) {
      const base = n.viewSource;
      if (!base) continue;
      const views = viewsOf.get(base);
      if (views) views.push(n);
      else viewsOf.set(base, [n]);
    }
    for (const { y, x, scores } of targets) {
      const again = ggml.ggml_mul_mat(ctx, scores.source(0).ptr, scores.source(1).ptr);
      const input = x.viewSource ? this.viewLike(again, x) : again;
      const copy = ggml.ggml_soft_max_ext(ctx, input, y.hasSource(1) ? y.source(1).ptr : null, 1, 0);
      copyOp(copy, y.ptr); // scale, max_bias and mask
      setSource(copy, 0, input);
      for (const { user, slot } of backwardUses.get(y.ptr) ?? []) setSource(user, slot, copy);
      for (const view of viewsOf.get(y.ptr) ?? []) {
        const uses = backwardUses.get(view.ptr) ?? [];
        if (uses.length === 0) continue;
        const clone = this.viewLike(copy, view);
        for (const { user, slot } of uses) setSource(user, slot, clone);
      }
      recomputed.add(copy);
    }
    return recomputed;
  }

  /** A view of `base` with the shape, strides and offset that `view` has into its own base. */
  private viewLike(base: Ptr, view: Tensor): Ptr {
    const [n0, n1, n2, n3] = view.ne;
    const [, b1, b2, b3] = view.nb;
    return this.ggml.ggml_view_4d(this.ctx, base, n0, n1, n2, n3, b1, b2, b3, view.viewOffset);
  }

  /**
   * gallocr may place SOFT_MAX_BACK in the memory of the softmax output it reads (src[1]), but the
   * CPU kernel copies dy into dx before multiplying by y, so in place it computes y := dy and
   * returns wrong gradients. Outputs are never reused, so flagging y as one avoids the aliasing;
   * a recomputed y gets a later user instead.
   */
  private protectSoftmaxOutputs(recomputed: Set<Ptr>): void {
    const { ggml } = this;
    const nodes = this.nodes;
    for (const node of nodes) {
      if (ggml.ggml_op_desc(node.ptr) !== "SOFT_MAX_BACK") continue;
      const y = node.source(1);
      const root = y.viewSource ?? y.ptr;
      // A recomputed output is wanted only until here: rather than pinning it for the whole
      // graph, a view that reads the gradient afterwards names it in a slot views ignore, so it
      // still has a user when SOFT_MAX_BACK is placed.
      const later = recomputed.has(root) && nodes.find((n) => NO_WORK_OPS.has(ggml.ggml_op_desc(n.ptr)) &&
        n.sourcePtrs.length === 1 && n.source(0).ptr === node.ptr);
      if (later) setSource(later.ptr, 1, root);
      else ggml.ggml_set_output(root);
    }
  }

  /** The gradient of a parameter after backward(), kept readable after compute. */
  grad(param: Tensor): Tensor {
    const ptr = this.ggml.ggml_graph_get_grad(this.graph, param.ptr);
    if (!ptr) throw new Error(`grad: ${param.describe()} has no gradient (not a parameter, or the loss does not depend on it)`);
    const g = this.wrap(ptr);
    if (!this.built) this.output(g);
    return g;
  }

  /** Places all op tensors; call once after building, before setting inputs. */
  allocate(): void {
    if (this.built) return;
    const { ggml } = this;
    const nodes = this.nodes;
    if (nodes.length === 0) throw new Error("allocate: the graph is empty (call output() first)");
    const unsupported = nodes.filter((n) => !ggml.ggml_backend_supports_op(this.backend.handle, n.ptr));
    if (unsupported.length) {
      const operands = (n: Tensor) => [0, 1].flatMap((i) => (n.hasSource(i) ? [n.source(i).dtype] : [])).join(", ");
      const ops = [...new Set(unsupported.map((n) => `${ggml.ggml_op_desc(n.ptr)}(${operands(n)}) -> ${n.dtype}`))];
      throw new Error(`${this.backend.device.name} cannot run: ${ops.join("; ")} (a frozen weight type this backend cannot differentiate through? try f32, f16 or q8_0)`);
    }
    this.galloc = ggml.ggml_gallocr_new(this.backend.defaultBufferType);
    if (!ggml.ggml_gallocr_alloc_graph(this.galloc, this.exec)) {
      throw new Error(`could not allocate the graph's ${nodes.length} nodes on ${this.backend.device.name}`);
    }
    this.planSplits(nodes);
    this.built = true;
  }

  /**
   * With a BLAS backend, the matmuls it takes (large enough, contiguous f32 operands) run on it and
   * everything else on the CPU backend, in graph order. Both work in host memory, so unlike
   * ggml_backend_sched nothing is copied: the graph is cut into runs of consecutive nodes with one
   * owner each. Nodes that do no work (views, reshapes) stay in the run they fall in.
   */
  private planSplits(nodes: Tensor[]): void {
    const { ggml } = this;
    const blas = this.backend.blas;
    if (!blas) return;
    const owners: Ptr[] = [];
    nodes.forEach((node, i) => {
      const op = ggml.ggml_op_desc(node.ptr);
      const owner = this.runsOnBlas(node) ? blas : NO_WORK_OPS.has(op) && i > 0 ? owners[i - 1] : this.backend.handle;
      owners.push(owner);
    });
    const runs: { backend: Ptr; first: number; count: number }[] = [];
    owners.forEach((backend, i) => {
      const last = runs[runs.length - 1];
      if (last?.backend === backend) last.count++;
      else runs.push({ backend, first: i, count: 1 });
    });
    const memSize = runs.reduce((sum, run) => sum + ggml.ggml_graph_overhead_custom(run.count, false), 0);
    this.splitCtx = ggml.ggml_init({ mem_size: memSize, mem_buffer: null, no_alloc: true });
    this.splits = runs.map(({ backend, first, count }) => {
      const graph = ggml.ggml_new_graph_custom(this.splitCtx, count, false);
      for (let i = first; i < first + count; i++) ggml.ggml_graph_add_node(graph, nodes[i].ptr);
      return { backend, first, graph };
    });
  }

  /**
   * Whether the BLAS backend computes `node`: a matmul it supports (contiguous f32 operands, or
   * a weight it converts) with at least BLAS_MIN_FLOPS of work; below that, waking its threads
   * costs more than ggml's own kernel takes.
   */
  private runsOnBlas(node: Tensor): boolean {
    const blas = this.backend.blas;
    if (!blas) return false;
    const op = this.ggml.ggml_op_desc(node.ptr);
    if (op !== "MUL_MAT" && op !== "OUT_PROD") return false;
    // mul_mat sums over src0's rows, out_prod over its columns.
    const inner = op === "MUL_MAT" ? node.source(0).ne[0] : node.source(0).ne[1];
    const flops = 2 * inner * node.ne.reduce((a, b) => a * b, 1);
    return flops >= BLAS_MIN_FLOPS && this.ggml.ggml_backend_supports_op(blas, node.ptr);
  }

  /** How many nodes the BLAS backend computes, and in how many runs the graph is computed (0 without BLAS). */
  get blasShare(): { nodes: number; runs: number } {
    const nodes = this.splits.filter((split) => split.backend === this.backend.blas)
      .flatMap((split) => this.nodesOf(split.graph))
      .filter((n) => !NO_WORK_OPS.has(this.ggml.ggml_op_desc(n.ptr))).length;
    return { nodes, runs: this.splits.length };
  }

  /** Bytes of the allocator's compute buffer. */
  get computeBytes(): number {
    return this.galloc ? this.ggml.ggml_gallocr_get_buffer_size(this.galloc, 0) : 0;
  }

  compute(): void {
    if (!this.built) this.allocate();
    this.backend.shareCores(this.splits.length > 0);
    const parts = this.splits.length ? this.splits : [{ backend: this.backend.handle, graph: this.exec }];
    for (const { backend, graph } of parts) {
      const status = this.ggml.ggml_backend_graph_compute(backend, graph);
      if (status !== GGML_STATUS_SUCCESS) throw new Error(`graph compute failed with ggml status ${status}`);
    }
  }

  /** The backend that computes node i of `nodes` (see planSplits). */
  private ownerOf(i: number): Ptr {
    let owner = this.backend.handle;
    for (const split of this.splits) {
      if (split.first > i) break;
      owner = split.backend;
    }
    return owner;
  }

  /**
   * Time per op type: computes the allocated graph once node by node, in graph order (so every
   * node reads what it would read in a full compute), `runs` times; per node the median less the
   * cost of computing an empty-work node (the per-compute overhead). Keys are ggml op names, with
   * MUL_MAT and OUT_PROD split by operand shape. `setInputs` runs before each pass (the allocator
   * may have reused input memory). For profiling only: slower than compute().
   */
  profile(runs = 3, setInputs?: () => void): Map<string, { ms: number; count: number }> {
    if (!this.built) this.allocate();
    const { ggml } = this;
    const nodes = this.nodes;
    const ctx = ggml.ggml_init({ mem_size: ggml.ggml_graph_overhead_custom(1, false) + 1024, mem_buffer: null, no_alloc: true });
    const one = ggml.ggml_new_graph_custom(ctx, 1, false);
    const samples = nodes.map(() => [] as number[]);
    const owners = nodes.map((_, i) => this.ownerOf(i));
    this.backend.shareCores(this.splits.length > 0);
    try {
      for (let r = 0; r < runs; r++) {
        setInputs?.();
        nodes.forEach((node, i) => {
          ggml.ggml_graph_clear(one);
          ggml.ggml_graph_add_node(one, node.ptr);
          const t0 = performance.now();
          ggml.ggml_backend_graph_compute(owners[i], one);
          samples[i].push(performance.now() - t0);
        });
      }
    } finally {
      ggml.ggml_free(ctx);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const perNode = samples.map(median);
    // Views, reshapes and the like do no work: their time is the overhead of one compute call.
    const free = nodes.map((n, i) => [ggml.ggml_op_desc(n.ptr), perNode[i]] as const)
      .filter(([op]) => NO_WORK_OPS.has(op)).map(([, ms]) => ms);
    const overhead = free.length ? median(free) : 0;
    const out = new Map<string, { ms: number; count: number }>();
    nodes.forEach((node, i) => {
      let key = ggml.ggml_op_desc(node.ptr);
      if (key === "MUL_MAT" || key === "OUT_PROD") {
        const a = node.source(0);
        const b = node.source(1);
        key += ` ${a.ne.slice(0, 2).join("x")} . ${b.ne.slice(0, 2).join("x")}${b.isContiguous ? "" : " (b strided)"}${owners[i] === this.backend.blas ? " [BLAS]" : ""}`;
      }
      const entry = out.get(key) ?? { ms: 0, count: 0 };
      entry.ms += Math.max(0, perNode[i] - overhead);
      entry.count++;
      out.set(key, entry);
    });
    return out;
  }

  free(): void {
    const { ggml } = this;
    if (this.galloc) ggml.ggml_gallocr_free(this.galloc);
    this.galloc = 0n;
    if (this.splitCtx) ggml.ggml_free(this.splitCtx);
    this.splitCtx = 0n;
    this.splits = [];
    this.own.free();
    ggml.ggml_free(this.ctx);
  }
}

export type { Shape4 };
