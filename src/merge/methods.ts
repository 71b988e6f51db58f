// Full-model merge methods: each one a small function over the tensors of one weight, behind one
// interface and registered by name (mergekit's registry, mergekit/merge_methods/registry.py).
// Semantics follow mergekit so that its configs mean the same here; `magnitude_prune` and
// `lines`, which mergekit lacks, follow PEFT's merge_utils and the LiNeS paper.
import type { Graph } from "../engine/graph.ts";
import type { Tensor } from "../engine/tensor.ts";
import {
  keepAtLeast, l1RescaleFactor, magnitudeCut, oneIfZero, selectAscending, signAgreement, sumAll, weightedSum,
  type ConsensusMethod,
} from "./ops.ts";
import type { ParamValue } from "./params.ts";

export interface ParameterDef {
  name: string;
  required?: boolean;
  default?: ParamValue;
}

export type Params = Record<string, ParamValue>;

/**
 * What a method sees for one tensor, in one ggml graph. The graph covers one chunk of rows of
 * the tensor (PyTorch dim 0); tensors are f32, in ggml order.
 */
export interface MergeInputs {
  g: Graph;
  /** The tensor's name in the checkpoints. */
  name: string;
  /** The base model's tensor, for methods that need a base. */
  base?: Tensor;
  /** The other models' tensors (never the base), in config order. */
  models: readonly Tensor[];
  /** Per-model tensor parameters, resolved for this tensor (defaults applied). */
  params: readonly Params[];
  /** Global parameters, resolved for this tensor. */
  global: Params;
  /** Layer position of the tensor: mergekit's gradient t, and LiNeS depth (embeddings 0, head 1). */
  t: number;
  depth: number;
  /**
   * A Bernoulli(density) keep mask (1 kept, 0 dropped) of model i over this chunk: drawn once
   * per tensor from the run seed, the tensor name and i, so both passes see the same draws.
   */
  keepMask(i: number, density: number): Tensor;
  /** A per-row vector (one value per ggml row of the whole tensor) as this chunk's [1, rows] input. */
  rowInput(values: Float32Array): Tensor;
}

/** Analysis outputs: `sums` are added over the chunks (e.g. [1] norms), `parts` concatenated (|delta|, per-row sums). */
export interface AnalyzeOutputs {
  sums?: Record<string, Tensor>;
  parts?: Record<string, Tensor>;
}

/** Whole-tensor statistics handed to `plan`. */
export interface Stats {
  sums: Record<string, Float64Array>;
  parts: Record<string, Float32Array>;
}

export interface PlanInputs {
  name: string;
  params: readonly Params[];
  global: Params;
  elements: number;
}

/**
 * One merge method. `analyze` (optional) builds graph outputs that are read back to the host,
 * `plan` turns them into scalars (thresholds, angles, rescale factors) in JS, and `merge` builds
 * the merged tensor with those scalars baked in. `merge` must be elementwise over rows (any
 * whole-tensor reduction belongs in `analyze`), because tensors are merged in chunks of rows.
 */
export interface MergeMethod<P = undefined> {
  name: string;
  description: string;
  /** Task-vector and interpolation methods work relative to base_model. */
  needsBase: boolean;
  /** Bounds on the number of models besides the base. */
  minModels: number;
  maxModels?: number;
  /** Global parameters (mergekit's `parameters()`). */
  parameters: ParameterDef[];
  /** Per-model parameters (mergekit's `tensor_parameters()`). */
  tensorParameters: ParameterDef[];
  analyze?(x: MergeInputs): AnalyzeOutputs;
  plan?(stats: Stats, x: PlanInputs): P;
  merge(x: MergeInputs, plan: P): Tensor;
}

type AnyMethod = MergeMethod<any>;
const REGISTRY = new Map<string, AnyMethod>();

export function registerMergeMethod<P>(method: MergeMethod<P>): void {
  if (REGISTRY.has(method.name)) throw new Error(`merge method "${method.name}" is already registered`);
  REGISTRY.set(method.name, method as AnyMethod);
}

export function getMergeMethod(name: string): AnyMethod {
  const method = REGISTRY.get(name);
  if (!method) throw new Error(`unknown merge_method "${name}" (known: ${[...REGISTRY.keys()].join(", ")})`);
  return method;
}

export function mergeMethodNames(): string[] {
  return [...REGISTRY.keys()];
}

/** Every parameter name some method takes: a name outside this set is a typo, not another method's option. */
export function knownParameterNames(): Set<string> {
  return new Set([...REGISTRY.values()].flatMap((m) => [...m.parameters, ...m.tensorParameters].map((p) => p.name)));
}

const num = (v: ParamValue | undefined, name: string): number => {
  if (typeof v !== "number") throw new Error(`parameter ${name} must be a number, got ${JSON.stringify(v)}`);
  return v;
};
const bool = (v: ParamValue | undefined): boolean => v === true || (typeof v === "number" && v !== 0);

// ---------------------------------------------------------------------------------------------
// Generalized task arithmetic (mergekit/merge_methods/generalized_task_arithmetic.py)

type Sparsification = "magnitude" | "random" | "magnitude_outliers";

interface TaskArithmeticSpec {
  name: string;
  description: string;
  sparsification?: Sparsification;
  consensus?: ConsensusMethod;
  defaultNormalize: boolean;
  defaultRescale: boolean;
  /** LiNeS: scale the merged task vector by alpha + (beta - alpha) * depth. */
  layerScaling?: boolean;
}

interface TaskArithmeticPlan {
  /** Per model: the kept range [lower, upper) of |delta| (magnitude methods). */
  cuts: ({ lower: number; upper: number } | undefined)[];
  /** Per model: mergekit's L1 rescale of the sparsified delta (1 without rescale). */
  factors: number[];
}

function taskArithmeticMethod(spec: TaskArithmeticSpec): MergeMethod<TaskArithmeticPlan> {
  const magnitudeBased = spec.sparsification === "magnitude" || spec.sparsification === "magnitude_outliers";
  const tensorParameters: ParameterDef[] = [
    spec.layerScaling ? { name: "weight", default: 1 } : { name: "weight", required: true },
    { name: "density", default: 1 },
  ];
  if (spec.sparsification === "magnitude_outliers") tensorParameters.push({ name: "gamma", default: 0.01 });
  const parameters: ParameterDef[] = [
    { name: "int8_mask", default: false },
    { name: "normalize", default: spec.defaultNormalize },
    { name: "rescale", default: spec.defaultRescale },
    { name: "lambda", default: 1 },
  ];
  if (spec.layerScaling) parameters.push({ name: "alpha", required: true }, { name: "beta", required: true });
  const sparsified = (x: Pick<MergeInputs, "params">, i: number) => spec.sparsification !== undefined && num(x.params[i]!.density, "density") < 1;
  const density = (x: Pick<MergeInputs, "params">, i: number) => num(x.params[i]!.density, "density");

  return {
    name: spec.name,
    description: spec.description,
    needsBase: true,
    minModels: 1,
    parameters,
    tensorParameters,
    analyze: spec.sparsification
      ? (x) => {
        const { g } = x;
        const sums: Record<string, Tensor> = {};
        const parts: Record<string, Tensor> = {};
        const rescale = bool(x.global.rescale);
        x.models.forEach((m, i) => {
          if (!sparsified(x, i)) return;
          const abs = g.abs(g.sub(m, x.base!));
          if (magnitudeBased) parts[`abs${i}`] = abs;
          if (rescale) sums[`l1_${i}`] = g.sum(abs);
          if (rescale && spec.sparsification === "random") sums[`kept${i}`] = g.sum(g.mul(abs, x.keepMask(i, density(x, i))));
        });
        return { sums, parts };
      }
      : undefined,
    plan: spec.sparsification
      ? (stats, x) => {
        const rescale = bool(x.global.rescale);
        const cuts = x.params.map((p, i) => {
          const magnitudes = stats.parts[`abs${i}`];
          if (!magnitudes) return undefined;
          if (spec.sparsification === "magnitude") return { lower: magnitudeCut(magnitudes, density(x, i)), upper: Infinity };
          return outlierCuts(magnitudes, density(x, i), num(p.gamma, "gamma"));
        });
        const factors = x.params.map((_, i) => {
          if (!rescale || !sparsified(x, i)) return 1;
          const before = stats.sums[`l1_${i}`]![0]!;
          if (spec.sparsification === "random") return l1RescaleFactor(before, stats.sums[`kept${i}`]![0]!);
          // The kept L1 norm from the magnitudes already on the host.
          const { lower, upper } = cuts[i]!;
          let after = 0;
          for (const v of stats.parts[`abs${i}`]!) if (v >= lower && v < upper) after += v;
          return l1RescaleFactor(before, after);
        });
        return { cuts, factors };
      }
      : undefined,
    merge(x, plan) {
      const { g, base } = x;
      const weights = x.params.map((p) => num(p.weight, "weight"));
      const deltas = x.models.map((m, i) => {
        const delta = g.sub(m, base!);
        if (!sparsified(x, i)) return delta;
        let masked: Tensor;
        if (spec.sparsification === "random") {
          masked = g.mul(delta, x.keepMask(i, density(x, i)));
        } else {
          const cut = plan.cuts[i]!;
          masked = keepAtLeast(g, delta, cut.lower);
          if (cut.upper !== Infinity) masked = g.sub(masked, keepAtLeast(g, delta, cut.upper));
        }
        const factor = plan.factors[i]!;
        return factor === 1 ? masked : g.scale(masked, factor);
      });
      const weighted = deltas.map((d, i) => (weights[i] === 1 ? d : g.scale(d, weights[i]!)));
      let mixed: Tensor;
      if (spec.consensus) {
        const agree = signAgreement(g, weighted, spec.consensus);
        mixed = sumAll(g, weighted.map((w, i) => g.mul(w, agree[i]!)));
        if (bool(x.global.normalize)) mixed = g.div(mixed, oneIfZero(g, weightedSum(g, agree, weights)));
      } else {
        mixed = sumAll(g, weighted);
        if (bool(x.global.normalize)) {
          const total = weights.reduce((a, b) => a + b, 0);
          if (Math.abs(total) >= 1e-8 && total !== 1) mixed = g.scale(mixed, 1 / total);
        }
      }
      let factor = num(x.global.lambda, "lambda");
      if (spec.layerScaling) {
        const alpha = num(x.global.alpha, "alpha");
        factor *= alpha + (num(x.global.beta, "beta") - alpha) * x.depth;
      }
      if (factor !== 1) mixed = g.scale(mixed, factor);
      return g.add(base!, mixed);
    },
  };
}

/**
 * mergekit's magnitude_outliers (Model Breadcrumbs): drop the gamma fraction of largest
 * magnitudes and then the smallest, keeping int(density * n). mergekit keeps nothing when
 * int(gamma * n) is 0 (its slice [n_bot:-0] is empty), which zeroes small tensors such as
 * norms; here no large entries are dropped in that case.
 */
function outlierCuts(magnitudes: Float32Array, density: number, gamma: number): { lower: number; upper: number } {
  const n = magnitudes.length;
  let nTop = Math.trunc(gamma * n);
  let nBot = n - Math.trunc(density * n) - nTop;
  if (nBot < 0) {
    nTop += nBot;
    nBot = 0;
  }
  const upper = nTop > 0 ? selectAscending(magnitudes, n - nTop) : Infinity;
  const lower = nBot > 0 ? selectAscending(magnitudes, nBot) : 0;
  return { lower, upper };
}

for (const spec of [
  { name: "task_arithmetic", description: "Task Arithmetic (arXiv 2212.04089): base + Σ weight·(model − base)", defaultNormalize: false, defaultRescale: false },
  { name: "ties", description: "TIES (arXiv 2306.01708): magnitude trim to density, sign election, disjoint mean", sparsification: "magnitude", consensus: "sum", defaultNormalize: true, defaultRescale: false },
  { name: "dare_linear", description: "DARE (arXiv 2311.03099): random drop to density, rescale, weighted sum", sparsification: "random", defaultNormalize: false, defaultRescale: true },
  { name: "dare_ties", description: "DARE with TIES sign election", sparsification: "random", consensus: "sum", defaultNormalize: false, defaultRescale: true },
  { name: "magnitude_prune", description: "PEFT's magnitude_prune: magnitude trim to density, weighted sum", sparsification: "magnitude", defaultNormalize: false, defaultRescale: false },
  { name: "breadcrumbs", description: "Model Breadcrumbs (arXiv 2312.06795): drop largest gamma and smallest, weighted sum", sparsification: "magnitude_outliers", defaultNormalize: false, defaultRescale: false },
  { name: "breadcrumbs_ties", description: "Model Breadcrumbs with TIES sign election", sparsification: "magnitude_outliers", consensus: "sum", defaultNormalize: false, defaultRescale: false },
  { name: "lines", description: "LiNeS (arXiv 2410.17146): task vectors scaled linearly with depth from alpha to beta", defaultNormalize: false, defaultRescale: false, layerScaling: true },
] satisfies TaskArithmeticSpec[]) {
  registerMergeMethod(taskArithmeticMethod(spec as TaskArithmeticSpec));
}

// ---------------------------------------------------------------------------------------------
// Linear (mergekit/merge_methods/linear.py): Σ w_i x_i, divided by Σ w_i when normalize.

registerMergeMethod({
  name: "linear",
  description: "weighted average of the models (model soups)",
  needsBase: false,
  minModels: 1,
  parameters: [{ name: "normalize", default: true }],
  tensorParameters: [{ name: "weight", required: true }],
  merge(x) {
    const weights = x.params.map((p) => num(p.weight, "weight"));
    const sum = weightedSum(x.g, x.models, weights);
    const total = weights.reduce((a, b) => a + b, 0);
    return bool(x.global.normalize) && total !== 1 ? x.g.scale(sum, 1 / total) : sum;
  },
});

// ---------------------------------------------------------------------------------------------
// SLERP (mergekit/merge_methods/slerp.py): the norms and the dot product are ggml reductions; the
// angle (acos, sin: not ggml ops) is scalar JS; the interpolation is a ggml weighted sum.

interface SlerpPlan { s0: number; s1: number }

registerMergeMethod<SlerpPlan>({
  name: "slerp",
  description: "spherical interpolation between base_model (t = 0) and one other model (t = 1)",
  needsBase: true,
  minModels: 1,
  maxModels: 1,
  parameters: [{ name: "t", required: true }],
  tensorParameters: [],
  analyze({ g, base, models }) {
    const v1 = models[0]!;
    return { sums: { n0: g.sum(g.sqr(base!)), n1: g.sum(g.sqr(v1)), dot: g.sum(g.mul(base!, v1)) } };
  },
  plan({ sums }, x) {
    const t = num(x.global.t, "t");
    const eps = 1e-8;
    const norm0 = Math.sqrt(sums.n0![0]!);
    const norm1 = Math.sqrt(sums.n1![0]!);
    const dot = sums.dot![0]! / ((norm0 > eps ? norm0 : 1) * (norm1 > eps ? norm1 : 1));
    if (Math.abs(dot) > 0.9995) return { s0: 1 - t, s1: t };
    const theta0 = Math.acos(dot);
    const sinTheta0 = Math.sin(theta0);
    const thetaT = theta0 * t;
    return { s0: Math.sin(theta0 - thetaT) / sinTheta0, s1: Math.sin(thetaT) / sinTheta0 };
  },
  merge({ g, base, models }, { s0, s1 }) {
    return weightedSum(g, [base!, models[0]!], [s0, s1]);
  },
});

// ---------------------------------------------------------------------------------------------
// Model Stock (mergekit/merge_methods/model_stock.py): the offsets' dot products and norms are
// ggml reductions (per row with filter_wise), the cosines and t = N cos / (1 + (N - 1) cos) scalar
// JS, and the interpolation w_0 + t (w_avg - w_0) a ggml graph.

registerMergeMethod<Float32Array>({
  name: "model_stock",
  description: "Model Stock (arXiv 2403.19522): average of the models pulled towards base by their offsets' angle",
  needsBase: true,
  minModels: 2,
  parameters: [{ name: "filter_wise", default: false }],
  tensorParameters: [],
  analyze({ g, base, models, global }) {
    const reduce = (t: Tensor) => (bool(global.filter_wise) ? g.sumRows(t) : g.sum(t));
    const offsets = models.map((m) => g.sub(m, base!));
    const stats: Record<string, Tensor> = {};
    offsets.forEach((a, i) => offsets.forEach((b, j) => {
      if (j >= i) stats[`${i},${j}`] = reduce(g.mul(a, b));
    }));
    return bool(global.filter_wise) ? { parts: stats } : { sums: stats };
  },
  plan({ sums, parts }, x) {
    const n = x.params.length;
    const get = (i: number, j: number) => (bool(x.global.filter_wise) ? parts : sums)[`${i},${j}`]!;
    const rows = get(0, 0).length;
    const t = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let cosSum = 0;
      let pairs = 0;
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          const norms = Math.sqrt(get(i, i)[r]!) * Math.sqrt(get(j, j)[r]!);
          cosSum += Math.min(1, Math.max(-1, get(i, j)[r]! / Math.max(norms, 1e-6)));
          pairs++;
        }
      }
      const cos = cosSum / pairs;
      t[r] = (n * cos) / (1 + (n - 1) * cos);
    }
    return t;
  },
  merge({ g, base, models, global, rowInput }, t) {
    const average = g.scale(sumAll(g, models), 1 / models.length);
    const pull = g.sub(average, base!);
    // t w_avg + (1 - t) w_0 = w_0 + t (w_avg - w_0)
    return g.add(base!, bool(global.filter_wise) ? g.mul(pull, rowInput(t)) : g.scale(pull, t[0]!));
  },
});
