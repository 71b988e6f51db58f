// AdamW over persistent gradient accumulators, with global-norm clipping, as ggml graphs.
// The optimizer moments live in their own store, so nothing that resets gradients touches them
// (ggml_graph_reset would zero them, which is why the training loop is ours and not ggml-opt's).
import type { Backend } from "../engine/backend.ts";
import { Graph } from "../engine/graph.ts";
import { TensorStore } from "../engine/store.ts";
import type { Tensor } from "../engine/tensor.ts";

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value; 0 disables clipping. */
  maxGradNorm: number;
}

export const ADAMW_DEFAULTS: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };

export interface NamedParam {
  name: string;
  tensor: Tensor;
}

export class AdamW {
  /** Gradient accumulators, one per parameter, summed over the micro-batches of a step. */
  readonly grads: TensorStore;
  readonly moments: TensorStore;
  private readonly normGraph: Graph;
  private readonly stepGraph: Graph;
  private readonly sumOfSquares: Tensor;
  private readonly hyper: Tensor;
  /** One in-place SCALE node per accumulator: the clip and micro-batch factor, set each step. */
  private readonly gradScales: Tensor[];
  private readonly accumulatorByParam = new Map<Tensor["ptr"], Tensor>();
  /** Optimizer steps taken; bias correction uses it. */
  stepCount = 0;

  constructor(backend: Backend, readonly params: NamedParam[], readonly options: AdamWOptions) {
    this.grads = new TensorStore(backend, "gradients", params.length + 1);
    this.moments = new TensorStore(backend, "adamw moments", 2 * params.length + 1);
    const m = new Map<string, Tensor>();
    const v = new Map<string, Tensor>();
    for (const { name, tensor } of params) {
      if (tensor.dtype !== "f32") throw new Error(`${name} is ${tensor.dtype}: trainable tensors must be f32`);
      this.accumulatorByParam.set(tensor.ptr, this.grads.tensor("f32", tensor.ne, `grad ${name}`));
      m.set(name, this.moments.tensor("f32", tensor.ne, `m ${name}`));
      v.set(name, this.moments.tensor("f32", tensor.ne, `v ${name}`));
    }
    this.grads.allocate();
    this.moments.allocate();

    const accumulators = params.map((p) => this.accumulatorOf(p.tensor)!);
    this.normGraph = new Graph(backend, { maxNodes: 4 * params.length + 16 });
    let sum: Tensor | undefined;
    for (const acc of accumulators) {
      // The squared norm as a dot product (mul_mat of the flat gradient with itself): one read of
      // the gradient, where sum(sqr(g)) writes and reads a squared copy as well.
      const flat = this.normGraph.reshape(acc, [acc.elements]);
      const s = this.normGraph.reshape(this.normGraph.mulMat(flat, flat), [1]);
      sum = sum ? this.normGraph.add(sum, s) : s;
    }
    this.sumOfSquares = this.normGraph.output(sum!);
    this.normGraph.allocate();

    this.stepGraph = new Graph(backend, { maxNodes: 4 * params.length + 16 });
    this.hyper = this.stepGraph.input("f32", [7], "adamw hyper-parameters");
    // Scaling the accumulator in place, one vectorized pass, rather than a broadcast MUL into a
    // copy: 3.1 ms of MUL became 0.5 ms of SCALE in the cpu-small step graph (7.0 -> 4.6 ms).
    this.gradScales = accumulators.map((acc) => this.stepGraph.scaleInPlace(acc));
    params.forEach(({ name, tensor }, i) => {
      this.stepGraph.adamwStep(tensor, this.gradScales[i], m.get(name)!, v.get(name)!, this.hyper);
    });
    this.stepGraph.allocate();
  }

  accumulatorOf(param: Tensor): Tensor | undefined {
    return this.accumulatorByParam.get(param.ptr);
  }

  zeroGrad(): void {
    this.grads.clear();
  }

  /**
   * Applies one update from the accumulated gradients of `microBatches` mean losses, each scaled
   * by 1/microBatches so that the step sees their mean. Returns the global gradient norm before
   * clipping, as transformers' Trainer logs it.
   */
  step(lr: number, microBatches: number): number {
    this.normGraph.compute();
    const gradNorm = Math.sqrt(this.sumOfSquares.getF32()[0]) / microBatches;
    if (!Number.isFinite(gradNorm)) return gradNorm;
    const { maxGradNorm, beta1, beta2, eps, weightDecay } = this.options;
    const clip = maxGradNorm > 0 && gradNorm > maxGradNorm ? maxGradNorm / (gradNorm + 1e-6) : 1;
    this.stepCount++;
    const t = this.stepCount;
    this.hyper.setAll(Float32Array.of(lr, beta1, beta2, eps, weightDecay, 1 / (1 - beta1 ** t), 1 / (1 - beta2 ** t)));
    for (const node of this.gradScales) Graph.setScale(node, clip / microBatches);
    this.stepGraph.compute();
    return gradNorm;
  }

  /** Moments by parameter name for checkpoints: m.<name> and v.<name>. */
  get state(): [string, Tensor][] {
    return this.params.flatMap(({ name }) => [[`m.${name}`, this.moments.get(`m ${name}`)!], [`v.${name}`, this.moments.get(`v ${name}`)!]]);
  }

  free(): void {
    this.normGraph.free();
    this.stepGraph.free();
    this.grads.free();
    this.moments.free();
  }
}
