// GPT-2: learned positions, pre-LayerNorm blocks, fused qkv, tanh GELU, tied head, and
// Conv1D weights stored [in, out] (the transpose of nn.Linear).
import type { Backend } from "../engine/backend.ts";
import { geluErf, geluTanh, layerNormAffine } from "../engine/compose.ts";
import type { Graph } from "../engine/graph.ts";
import type { DType, Tensor } from "../engine/tensor.ts";
import type { Gpt2Config } from "../io/hf-config.ts";
import { attend, attentionMaskInput, positionsInput } from "./attention.ts";
import { Model, type CacheWindow, type ForwardInputs, type ForwardResult, type ParameterSpec } from "./model.ts";

const ACTIVATIONS: Record<string, (g: Graph, x: Tensor) => Tensor> = {
  gelu_new: geluTanh,
  gelu_pytorch_tanh: geluTanh,
  gelu: geluErf,
  relu: (g, x) => g.relu(x),
};

/** Every GPT-2 projection but the (tied) LM head is a Conv1D. */
const isConv1d = (module: string) => module !== "lm_head" && module !== "transformer.wte";

export class Gpt2Model extends Model<Gpt2Config> {
  constructor(backend: Backend, config: Gpt2Config, weightDtype: DType = "f32") {
    if (!ACTIVATIONS[config.activation]) {
      throw new Error(`GPT-2 activation_function "${config.activation}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(", ")})`);
    }
    super(backend, config, weightDtype);
  }

  parameterSpecs(): ParameterSpec[] {
    const { hiddenSize: h, intermediateSize: inner, vocabSize, maxPositions, numLayers } = this.config;
    const specs: ParameterSpec[] = [
      { name: "transformer.wte.weight", shape: [vocabSize, h] },
      { name: "transformer.wpe.weight", shape: [maxPositions, h] },
    ];
    const conv1d = (name: string, inp: number, out: number) => {
      specs.push({ name: `${name}.weight`, shape: [inp, out] }, { name: `${name}.bias`, shape: [out] });
    };
    const norm = (name: string) => specs.push({ name: `${name}.weight`, shape: [h] }, { name: `${name}.bias`, shape: [h] });
    for (let i = 0; i < numLayers; i++) {
      const p = `transformer.h.${i}`;
      norm(`${p}.ln_1`);
      conv1d(`${p}.attn.c_attn`, h, 3 * h);
      conv1d(`${p}.attn.c_proj`, h, h);
      norm(`${p}.ln_2`);
      conv1d(`${p}.mlp.c_fc`, h, inner);
      conv1d(`${p}.mlp.c_proj`, inner, h);
    }
    norm("transformer.ln_f");
    if (!this.config.tieWordEmbeddings) specs.push({ name: "lm_head.weight", shape: [vocabSize, h] });
    return specs;
  }

  protected override ignorable(name: string): boolean {
    // attn.bias / attn.masked_bias are causal-mask buffers older checkpoints saved.
    return /\.attn\.(masked_)?bias$/.test(name) || (this.config.tieWordEmbeddings && name === "lm_head.weight");
  }

  /** Conv1D computes x W + b with W stored [in, out]: transpose to mul_mat's ne [in, out]. */
  override matmulWeight(g: Graph, module: string): Tensor {
    const w = super.matmulWeight(g, module);
    return isConv1d(module) ? g.cont(g.transpose(w)) : w;
  }

  override toStoredLayout(g: Graph, module: string, w: Tensor): Tensor {
    return isConv1d(module) ? g.cont(g.transpose(w)) : w;
  }

  protected override matmulShape(module: string): [number, number] {
    const [n0, n1] = super.matmulShape(module);
    return isConv1d(module) ? [n1, n0] : [n0, n1];
  }

  forward(g: Graph, batchSize: number, seqLen: number, window?: CacheWindow): ForwardResult {
    const c = this.config;
    const past = window?.past ?? 0;
    if (past + seqLen > c.maxPositions) throw new Error(`sequence length ${past + seqLen} exceeds GPT-2's n_positions ${c.maxPositions}`);
    const ids = g.input("i32", [seqLen * batchSize], "input_ids");
    const mask = attentionMaskInput(g, batchSize, seqLen, true, past);
    const positions = positionsInput(g, batchSize, seqLen);
    const values: ForwardInputs["values"] = [[ids, (b) => b.inputIds], mask, positions];
    const h = c.hiddenSize;
    const headDim = h / c.numHeads;
    const act = ACTIVATIONS[c.activation];
    const norm = (x: Tensor, name: string) => layerNormAffine(g, x, this.param(`${name}.weight`), this.param(`${name}.bias`), c.layerNormEps);

    let hidden = g.add(g.getRows(this.param("transformer.wte.weight"), ids), g.getRows(this.param("transformer.wpe.weight"), positions[0]));
    for (let i = 0; i < c.numLayers; i++) {
      const p = `transformer.h.${i}`;
      const qkv = this.linear(g, `${p}.attn.c_attn`, norm(hidden, `${p}.ln_1`));
      const rowBytes = qkv.nb[1];
      // ggml's backward of a view (ACC) needs a contiguous incoming gradient; reshape's backward
      // makes it so, while a permuted gradient would reach the view directly.
      const part = (k: number) => g.reshape(g.cont(g.view(qkv, [headDim, c.numHeads, seqLen, batchSize], [headDim * 4, rowBytes, rowBytes * seqLen], k * h * 4)), [headDim, c.numHeads, seqLen, batchSize]);
      let scale = c.scaleAttnWeights ? 1 / Math.sqrt(headDim) : 1;
      if (c.scaleAttnByInverseLayerIdx) scale /= i + 1;
      const kv = window ? window.cache.append(g, i, part(1), part(2), past) : { k: part(1), v: part(2) };
      const attn = attend(g, part(0), kv.k, kv.v, mask[0], scale);
      hidden = g.add(hidden, this.linear(g, `${p}.attn.c_proj`, attn));
      const inner = act(g, this.linear(g, `${p}.mlp.c_fc`, norm(hidden, `${p}.ln_2`)));
      hidden = g.add(hidden, this.linear(g, `${p}.mlp.c_proj`, inner));
    }
    hidden = norm(hidden, "transformer.ln_f");
    const head = c.tieWordEmbeddings ? "transformer.wte" : "lm_head";
    return { logits: this.linear(g, head, hidden), inputs: { values } };
  }
}
