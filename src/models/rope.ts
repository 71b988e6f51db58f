// Rotary position embedding parameters for ggml_rope_ext from a Hugging Face rope config:
// default, linear, dynamic NTK, YaRN and Llama 3 scaling.
import type { Graph, RopeOptions } from "../engine/graph.ts";
import type { Tensor } from "../engine/tensor.ts";
import { llama3FreqFactors, type LlamaFamilyConfig } from "../io/hf-config.ts";
import type { ForwardInputs } from "./model.ts";

/** Rotates x [headDim, heads, seq, batch] at i32 positions [seq * batch] (HF rotate_half = NEOX mode). */
export type RotateFn = (x: Tensor, positions: Tensor) => Tensor;

export class Rope {
  private readonly options: RopeOptions;
  private readonly dynamicFactor?: number;
  private readonly factors?: Float32Array;

  constructor(private readonly config: LlamaFamilyConfig) {
    const dim = config.headDim;
    const s = config.ropeScaling;
    const base: RopeOptions = { nDims: dim, freqBase: config.ropeTheta };
    switch (s.type) {
      case "none":
        this.options = base;
        break;
      case "linear":
        this.options = { ...base, freqScale: 1 / s.factor };
        break;
      case "dynamic":
        this.options = base;
        this.dynamicFactor = s.factor;
        break;
      case "yarn":
        // ggml multiplies by 1 + 0.1 ln(1/freq_scale) itself; transformers applies
        // attention_factor alone, so pass the ratio.
        this.options = {
          ...base, freqScale: 1 / s.factor, extFactor: 1, attnFactor: s.attentionFactor / (1 + 0.1 * Math.log(s.factor)),
          betaFast: s.betaFast, betaSlow: s.betaSlow, nCtxOrig: s.originalMaxPositionEmbeddings,
        };
        break;
      case "llama3":
        this.options = base;
        this.factors = llama3FreqFactors(dim, config.ropeTheta, s);
        break;
    }
  }

  /** Adds the inputs rope needs on this graph (Llama 3 frequency factors) and returns the rotation. */
  bind(g: Graph, inputs: ForwardInputs["values"]): RotateFn {
    let freqFactors: Tensor | undefined;
    if (this.factors) {
      const factors = this.factors;
      freqFactors = g.input("f32", [factors.length], "rope freq factors");
      inputs.push([freqFactors, () => factors]);
    }
    // ggml_rope takes one position per entry of dim 2, so the batch is folded into it.
    return (x, positions) => {
      const [dim, heads, seq, batch] = x.ne;
      const rotated = g.rope(g.reshape(x, [dim, heads, seq * batch]), positions, { ...this.options, freqBase: this.freqBase(seq), freqFactors });
      return g.reshape(rotated, x.ne);
    };
  }

  /** transformers' dynamic NTK grows the base once a sequence outgrows the trained length. */
  private freqBase(seq: number): number {
    const { ropeTheta, maxPositionEmbeddings, headDim } = this.config;
    const f = this.dynamicFactor;
    if (f === undefined || seq <= maxPositionEmbeddings) return this.options.freqBase;
    return ropeTheta * ((f * seq) / maxPositionEmbeddings - (f - 1)) ** (headDim / (headDim - 2));
  }
}
