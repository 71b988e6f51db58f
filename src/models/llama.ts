// Llama family (Llama, Mistral, Qwen2, SmolLM): RMSNorm, rotary embeddings, grouped-query
// attention, SwiGLU MLP, as transformers' LlamaForCausalLM / Qwen2ForCausalLM compute them.
import type { Backend } from "../engine/backend.ts";
import type { Graph } from "../engine/graph.ts";
import type { DType, Tensor } from "../engine/tensor.ts";
import type { LlamaFamilyConfig } from "../io/hf-config.ts";
import { attend, attentionMaskInput, positionsInput } from "./attention.ts";
import { Model, type CacheWindow, type ForwardInputs, type ForwardResult, type ParameterSpec } from "./model.ts";
import { Rope } from "./rope.ts";

export class LlamaModel extends Model<LlamaFamilyConfig> {
  private readonly rope: Rope;

  constructor(backend: Backend, config: LlamaFamilyConfig, weightDtype: DType = "f32") {
    super(backend, config, weightDtype);
    this.rope = new Rope(config);
  }

  parameterSpecs(): ParameterSpec[] {
    const c = this.config;
    const specs: ParameterSpec[] = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, c.hiddenSize] }];
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const linear = (name: string, out: number, inp: number, bias: boolean) => {
      specs.push({ name: `${name}.weight`, shape: [out, inp] });
      if (bias) specs.push({ name: `${name}.bias`, shape: [out] });
    };
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      specs.push({ name: `${p}.input_layernorm.weight`, shape: [c.hiddenSize] });
      linear(`${p}.self_attn.q_proj`, qDim, c.hiddenSize, c.attentionBias.qkv);
      linear(`${p}.self_attn.k_proj`, kvDim, c.hiddenSize, c.attentionBias.qkv);
      linear(`${p}.self_attn.v_proj`, kvDim, c.hiddenSize, c.attentionBias.qkv);
      linear(`${p}.self_attn.o_proj`, c.hiddenSize, qDim, c.attentionBias.output);
      specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [c.hiddenSize] });
      linear(`${p}.mlp.gate_proj`, c.intermediateSize, c.hiddenSize, c.mlpBias);
      linear(`${p}.mlp.up_proj`, c.intermediateSize, c.hiddenSize, c.mlpBias);
      linear(`${p}.mlp.down_proj`, c.hiddenSize, c.intermediateSize, c.mlpBias);
    }
    specs.push({ name: "model.norm.weight", shape: [c.hiddenSize] });
    if (!c.tieWordEmbeddings) specs.push({ name: "lm_head.weight", shape: [c.vocabSize, c.hiddenSize] });
    return specs;
  }

  protected override ignorable(name: string): boolean {
    return name.endsWith("rotary_emb.inv_freq") || (this.config.tieWordEmbeddings && name === "lm_head.weight");
  }

  forward(g: Graph, batchSize: number, seqLen: number, window?: CacheWindow): ForwardResult {
    const c = this.config;
    const ids = g.input("i32", [seqLen * batchSize], "input_ids");
    const mask = attentionMaskInput(g, batchSize, seqLen, true, window?.past);
    const positions = positionsInput(g, batchSize, seqLen);
    const values: ForwardInputs["values"] = [[ids, (b) => b.inputIds], mask, positions];
    const rotate = this.rope.bind(g, values);

    const norm = (x: Tensor, weight: string) => g.mul(g.rmsNorm(x, c.rmsNormEps), this.param(weight));
    let h = g.getRows(this.param("model.embed_tokens.weight"), ids);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      const x = norm(h, `${p}.input_layernorm.weight`);
      const heads = (module: string, n: number) => g.reshape(this.linear(g, `${p}.self_attn.${module}`, x), [c.headDim, n, seqLen, batchSize]);
      const q = rotate(heads("q_proj", c.numHeads), positions[0]);
      const k = rotate(heads("k_proj", c.numKvHeads), positions[0]);
      const v = heads("v_proj", c.numKvHeads);
      const kv = window ? window.cache.append(g, i, k, v, window.past) : { k, v };
      const attn = attend(g, q, kv.k, kv.v, mask[0], 1 / Math.sqrt(c.headDim));
      h = g.add(h, this.linear(g, `${p}.self_attn.o_proj`, attn));
      const y = norm(h, `${p}.post_attention_layernorm.weight`);
      const act = g.swiglu(this.linear(g, `${p}.mlp.gate_proj`, y), this.linear(g, `${p}.mlp.up_proj`, y));
      h = g.add(h, this.linear(g, `${p}.mlp.down_proj`, act));
    }
    h = norm(h, "model.norm.weight");
    const head = c.tieWordEmbeddings ? "model.embed_tokens" : "lm_head";
    return { logits: this.linear(g, head, h), inputs: { values } };
  }
}
