// LoRA with PEFT's semantics: y = W x + b + s B A dropout(x), s = alpha / r (alpha / sqrt(r) with
// rsLoRA); and DoRA: y = (m / ||W + s B A||_row) (W x + s B A x) + b with the norm detached, as
// peft.tuners.lora.dora.DoraLinearLayer computes it.
import { Graph } from "../engine/graph.ts";
import { seededNormal, seededUniform } from "../engine/random.ts";
import { TensorStore } from "../engine/store.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { Model } from "../models/model.ts";
import { patternValue, targetsModule, type LoraConfig } from "./peft-config.ts";

export interface LoraModule {
  /** HF module path, e.g. model.layers.0.self_attn.q_proj. */
  module: string;
  r: number;
  scale: number;
  /** ggml [in, r] = PEFT lora_A.weight [r, in]. */
  a: Tensor;
  /** ggml [r, out] = PEFT lora_B.weight [out, r]. */
  b: Tensor;
  /** DoRA magnitude m [out] and the detached norm ||W + s B A|| it is divided by. */
  magnitude?: Tensor;
  norm?: Tensor;
}

/** PEFT's state-dict key of a module tensor. */
export const peftKey = (module: string, suffix: string) => `base_model.model.${module}.${suffix}`;

export class LoraAdapter {
  readonly store: TensorStore;
  readonly modules: LoraModule[] = [];
  /**
   * Base-model tensors trained in place and saved with the adapter: modules_to_save and the
   * biases `bias: all | lora_only` selects, under PEFT's keys (base_model.model.<name>). PEFT
   * trains copies; tasktune trains the model's own tensors, so loading such an adapter changes
   * the model it is loaded onto.
   */
  readonly baseTensors: [string, Tensor][] = [];
  /** Dropout applies only while training, as in PEFT's nn.Dropout. */
  training = false;
  private dropoutSeed = 0;
  private readonly dropoutInputs = new WeakMap<Graph, [Tensor, () => Float32Array][]>();
  private merged?: Map<string, Float32Array>;

  constructor(readonly model: Model, readonly config: LoraConfig, options: { seed?: number; initialize?: boolean } = {}) {
    const targets = model.linearModules.filter((m) => targetsModule(config, m));
    if (targets.length === 0) {
      throw new Error(`target_modules ${JSON.stringify(config.targetModules)} match no module of this ${model.config.modelType} model ` +
        `(linear modules: ${[...new Set(model.linearModules.map((m) => m.split(".").pop()))].join(", ")})`);
    }
    this.store = new TensorStore(model.backend, "lora", 4 * targets.length + 4);
    for (const module of targets) {
      const r = patternValue(config.rankPattern, module, config.r);
      const alpha = patternValue(config.alphaPattern, module, config.loraAlpha);
      const { in: inp, out } = model.linearFeatures(module);
      this.modules.push({
        module, r,
        scale: config.useRslora ? alpha / Math.sqrt(r) : alpha / r,
        a: this.store.tensor("f32", [inp, r], peftKey(module, "lora_A.weight")),
        b: this.store.tensor("f32", [r, out], peftKey(module, "lora_B.weight")),
        magnitude: config.useDora ? this.store.tensor("f32", [out], peftKey(module, "lora_magnitude_vector")) : undefined,
        norm: config.useDora ? this.store.tensor("f32", [out], `${module} dora norm`) : undefined,
      });
    }
    this.store.allocate();
    this.baseTensors = selectBaseTensors(model, config, targets);
    if (options.initialize ?? true) this.initialize(options.seed ?? 0);
    for (const m of this.modules) model.linearOverrides.set(m.module, (g, _module, x) => this.forward(g, m, x));
  }

  /** PEFT's reset_lora_parameters: kaiming-uniform A and zero B; gaussian A; or nn.Linear's init. */
  private initialize(seed: number): void {
    const uniform = seededUniform(seed);
    const normal = seededNormal(seed + 1);
    const kaiming = (fanIn: number, n: number) => Float32Array.from({ length: n }, () => (2 * uniform() - 1) / Math.sqrt(fanIn));
    for (const m of this.modules) {
      const [inp, r] = m.a.ne;
      const out = m.b.ne[1];
      const init = this.config.initLoraWeights;
      m.a.setAll(init === "gaussian" ? Float32Array.from({ length: inp * r }, () => normal() / r) : kaiming(inp, inp * r));
      m.b.setAll(init === false ? kaiming(r, r * out) : new Float32Array(r * out));
    }
    if (this.config.useDora) {
      this.refreshDoraNorms();
      for (const m of this.modules) m.magnitude!.setAll(m.norm!.getF32());
    }
  }

  /** Tensors the optimizer updates. */
  get trainable(): Tensor[] {
    return this.stateDict.map(([, t]) => t);
  }

  /** PEFT's adapter state dict: key and tensor, LoRA tensors in module order, then base tensors. */
  get stateDict(): [string, Tensor][] {
    return [
      ...this.modules.flatMap((m): [string, Tensor][] => [
        [peftKey(m.module, "lora_A.weight"), m.a],
        [peftKey(m.module, "lora_B.weight"), m.b],
        ...(m.magnitude ? [[peftKey(m.module, "lora_magnitude_vector"), m.magnitude] as [string, Tensor]] : []),
      ]),
      ...this.baseTensors,
    ];
  }

  /** Graph inputs the adapter added to g (dropout masks), to fill before each compute. */
  inputsOf(g: Graph): [Tensor, () => Float32Array][] {
    return this.dropoutInputs.get(g) ?? [];
  }

  /** Reseeds dropout so that a resumed run draws the same masks as an uninterrupted one. */
  setDropoutStep(seed: number, step: number): void {
    this.dropoutSeed = (Math.imul(seed, 0x9e3779b1) ^ step) >>> 0;
  }

  private forward(g: Graph, m: LoraModule, x: Tensor): Tensor {
    if (this.merged) return this.model.baseLinear(g, m.module, x);
    const dropped = this.training && this.config.loraDropout > 0 ? this.dropout(g, m, x) : x;
    // s B (A x) as B (s (A x)): the scale (and its gradient) over r rows instead of out_features.
    const lora = g.mulMat(m.b, g.scale(g.mulMat(m.a, dropped), m.scale));
    if (!m.magnitude) return g.add(this.model.baseLinear(g, m.module, x), lora);
    const ratio = g.div(m.magnitude, m.norm!); // m / ||W + s B A||, no gradient into the norm
    const projected = g.mulMat(this.model.matmulWeight(g, m.module), dropped);
    const biasName = `${m.module}.bias`;
    if (dropped === x) {
      const y = g.mul(g.add(projected, lora), ratio);
      return this.model.hasParam(biasName) ? g.add(y, this.model.param(biasName)) : y;
    }
    // With dropout PEFT keeps the undropped base output and adds (ratio - 1) W x_d + ratio s B A x_d.
    const base = this.model.baseLinear(g, m.module, x);
    return g.add(g.add(base, g.mul(projected, g.scaleBias(ratio, 1, -1))), g.mul(lora, ratio));
  }

  private dropout(g: Graph, m: LoraModule, x: Tensor): Tensor {
    const p = this.config.loraDropout;
    const mask = g.input("f32", x.ne, `${m.module} dropout`);
    const inputs = this.dropoutInputs.get(g) ?? [];
    const index = inputs.length;
    inputs.push([mask, () => {
      const uniform = seededUniform((this.dropoutSeed + index * 0x85ebca6b) >>> 0);
      return Float32Array.from({ length: x.elements }, () => (uniform() < p ? 0 : 1 / (1 - p)));
    }]);
    this.dropoutInputs.set(g, inputs);
    return g.mul(x, mask);
  }

  /** ggml [in, out] delta s B A of a module, in matmulWeight's layout. */
  private delta(g: Graph, m: LoraModule): Tensor {
    return g.scale(g.mulMat(g.cont(g.transpose(m.a)), m.b), m.scale);
  }

  /**
   * DoRA's weight norm ||W + s B A|| per output row, computed in its own graph: PEFT detaches it,
   * and a separate graph is how ggml expresses "no gradient". Call before every forward that
   * follows a change of A or B (the trainer does, each step).
   */
  refreshDoraNorms(): void {
    if (!this.config.useDora) return;
    const g = new Graph(this.model.backend);
    try {
      for (const m of this.modules) {
        const w = g.add(this.model.matmulWeight(g, m.module), this.delta(g, m));
        g.copyInto(g.reshape(g.sqrt(g.sumRows(g.sqr(w))), [w.ne[1]]), m.norm!);
      }
      g.compute();
    } finally {
      g.free();
    }
  }

  /** PEFT's merge_and_unload: folds the adapter into the base weights (undone by unmerge). */
  merge(): void {
    if (this.merged) return;
    this.refreshDoraNorms();
    const original = new Map<string, Float32Array>();
    const g = new Graph(this.model.backend);
    try {
      for (const m of this.modules) {
        const weight = this.model.param(`${m.module}.weight`);
        if (weight.dtype !== "f32") throw new Error(`merge: ${weight.name} is ${weight.dtype}; merging into quantized or half weights is done at export`);
        original.set(m.module, weight.getF32());
        let merged = g.add(this.model.matmulWeight(g, m.module), this.delta(g, m));
        if (m.magnitude) merged = g.mul(merged, g.div(m.magnitude, m.norm!));
        g.copyInto(this.model.toStoredLayout(g, m.module, merged), weight);
      }
      g.compute();
    } finally {
      g.free();
    }
    this.merged = original;
  }

  /** Restores the base weights saved at merge time. */
  unmerge(): void {
    if (!this.merged) return;
    for (const [module, values] of this.merged) this.model.param(`${module}.weight`).setAll(values);
    this.merged = undefined;
  }

  /** Removes the adapter from the model (after merge, the model keeps the merged weights). */
  detach(): void {
    for (const m of this.modules) this.model.linearOverrides.delete(m.module);
  }

  free(): void {
    this.detach();
    this.store.free();
  }
}

/** The base tensors modules_to_save and bias make trainable, keyed as PEFT saves them. */
function selectBaseTensors(model: Model, config: LoraConfig, targets: string[]): [string, Tensor][] {
  const moduleOf = (name: string) => name.slice(0, name.lastIndexOf("."));
  const saved = config.modulesToSave ?? [];
  const chosen = model.parameterNames.filter((name) => {
    const module = moduleOf(name);
    if (saved.some((m) => module === m || module.endsWith(`.${m}`))) return true;
    if (!name.endsWith(".bias")) return false;
    return config.bias === "all" || (config.bias === "lora_only" && targets.includes(module));
  });
  const unmatched = saved.filter((m) => !model.parameterNames.some((n) => moduleOf(n) === m || moduleOf(n).endsWith(`.${m}`)));
  if (unmatched.length) throw new Error(`modules_to_save ${JSON.stringify(unmatched)} match no module of this ${model.config.modelType} model`);
  return chosen.map((name) => {
    const tensor = model.param(name);
    if (tensor.dtype !== "f32") throw new Error(`${name} is trained with the adapter (modules_to_save or bias) and must be f32, not ${tensor.dtype}`);
    const module = moduleOf(name);
    // PEFT wraps a LoRA target, so its own tensors sit under base_layer in the state dict.
    const key = targets.includes(module) ? `${module}.base_layer` : module;
    return [peftKey(key, name.slice(module.length + 1)), tensor];
  });
}
