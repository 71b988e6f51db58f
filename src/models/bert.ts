// BERT encoder with BertForSequenceClassification's pooler and classifier: post-LayerNorm
// blocks, learned absolute and token-type embeddings, erf GELU, padding mask.
import type { Backend } from "../engine/backend.ts";
import { geluErf, geluTanh, layerNormAffine, tanh } from "../engine/compose.ts";
import type { Graph } from "../engine/graph.ts";
import { seededNormal } from "../engine/random.ts";
import type { DType, Tensor } from "../engine/tensor.ts";
import type { BertConfig } from "../io/hf-config.ts";
import { attend, attentionMaskInput, positionsInput } from "./attention.ts";
import { Model, type ForwardInputs, type ForwardResult, type ParameterSpec } from "./model.ts";

const ACTIVATIONS: Record<string, (g: Graph, x: Tensor) => Tensor> = {
  gelu: geluErf,
  gelu_new: geluTanh,
  gelu_pytorch_tanh: geluTanh,
  relu: (g, x) => g.relu(x),
};

/** BERT's initializer_range, used when a pretrained encoder gets a fresh classifier. */
const INITIALIZER_STD = 0.02;

export class BertModel extends Model<BertConfig> {
  constructor(backend: Backend, config: BertConfig, weightDtype: DType = "f32") {
    if (!ACTIVATIONS[config.hiddenAct]) {
      throw new Error(`BERT hidden_act "${config.hiddenAct}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(", ")})`);
    }
    if (config.problemType && config.problemType !== "single_label_classification") {
      throw new Error(`BERT problem_type "${config.problemType}" is not supported yet (single_label_classification is)`);
    }
    super(backend, config, weightDtype);
  }

  override get kind(): "sequence-classification" {
    return "sequence-classification";
  }

  parameterSpecs(): ParameterSpec[] {
    const c = this.config;
    const h = c.hiddenSize;
    const specs: ParameterSpec[] = [
      { name: "bert.embeddings.word_embeddings.weight", shape: [c.vocabSize, h] },
      { name: "bert.embeddings.position_embeddings.weight", shape: [c.maxPositions, h] },
      { name: "bert.embeddings.token_type_embeddings.weight", shape: [c.typeVocabSize, h] },
    ];
    const linear = (name: string, out: number, inp: number) => specs.push({ name: `${name}.weight`, shape: [out, inp] }, { name: `${name}.bias`, shape: [out] });
    const norm = (name: string) => specs.push({ name: `${name}.weight`, shape: [h] }, { name: `${name}.bias`, shape: [h] });
    norm("bert.embeddings.LayerNorm");
    for (let i = 0; i < c.numLayers; i++) {
      const p = `bert.encoder.layer.${i}`;
      linear(`${p}.attention.self.query`, h, h);
      linear(`${p}.attention.self.key`, h, h);
      linear(`${p}.attention.self.value`, h, h);
      linear(`${p}.attention.output.dense`, h, h);
      norm(`${p}.attention.output.LayerNorm`);
      linear(`${p}.intermediate.dense`, c.intermediateSize, h);
      linear(`${p}.output.dense`, h, c.intermediateSize);
      norm(`${p}.output.LayerNorm`);
    }
    linear("bert.pooler.dense", h, h);
    linear("classifier", c.numLabels, h);
    return specs;
  }

  protected override ignorable(name: string): boolean {
    // Pretraining heads (cls.*) and the position_ids buffer come with pretrained encoders.
    return name.startsWith("cls.") || name === "bert.embeddings.position_ids";
  }

  /** As transformers does for a pretrained encoder: a new classifier, N(0, 0.02) weights, zero bias. */
  protected override initialValues(name: string, elements: number): Float32Array | undefined {
    if (name === "classifier.bias") return new Float32Array(elements);
    if (name === "classifier.weight") {
      const normal = seededNormal(0);
      return Float32Array.from({ length: elements }, () => normal() * INITIALIZER_STD);
    }
    return undefined;
  }

  forward(g: Graph, batchSize: number, seqLen: number): ForwardResult {
    const c = this.config;
    if (seqLen > c.maxPositions) throw new Error(`sequence length ${seqLen} exceeds BERT's max_position_embeddings ${c.maxPositions}`);
    const h = c.hiddenSize;
    const ids = g.input("i32", [seqLen * batchSize], "input_ids");
    const types = g.input("i32", [seqLen * batchSize], "token_type_ids");
    const mask = attentionMaskInput(g, batchSize, seqLen, false);
    const positions = positionsInput(g, batchSize, seqLen);
    const values: ForwardInputs["values"] = [
      [ids, (b) => b.inputIds],
      [types, (b) => b.tokenTypeIds ?? new Int32Array(b.inputIds.length)],
      mask, positions,
    ];
    const headDim = h / c.numHeads;
    const act = ACTIVATIONS[c.hiddenAct];
    const norm = (x: Tensor, name: string) => layerNormAffine(g, x, this.param(`${name}.weight`), this.param(`${name}.bias`), c.layerNormEps);

    const words = g.add(g.getRows(this.param("bert.embeddings.word_embeddings.weight"), ids),
      g.getRows(this.param("bert.embeddings.token_type_embeddings.weight"), types));
    const withPositions = g.add(words, g.getRows(this.param("bert.embeddings.position_embeddings.weight"), positions[0]));
    let hidden = norm(withPositions, "bert.embeddings.LayerNorm");
    for (let i = 0; i < c.numLayers; i++) {
      const p = `bert.encoder.layer.${i}`;
      const heads = (name: string) => g.reshape(this.linear(g, `${p}.attention.self.${name}`, hidden), [headDim, c.numHeads, seqLen, batchSize]);
      const attn = attend(g, heads("query"), heads("key"), heads("value"), mask[0], 1 / Math.sqrt(headDim));
      hidden = norm(g.add(this.linear(g, `${p}.attention.output.dense`, attn), hidden), `${p}.attention.output.LayerNorm`);
      const inner = act(g, this.linear(g, `${p}.intermediate.dense`, hidden));
      hidden = norm(g.add(this.linear(g, `${p}.output.dense`, inner), hidden), `${p}.output.LayerNorm`);
    }
    // The pooler reads each sequence's first ([CLS]) token.
    const first = g.cont(g.view(hidden, [h, batchSize], [hidden.nb[1] * seqLen, 0, 0], 0));
    const pooled = tanh(g, this.linear(g, "bert.pooler.dense", first));
    return { logits: this.linear(g, "classifier", pooled), inputs: { values } };
  }
}
