// The PyTorch/PEFT reference fixtures (test/fixtures/hf/README.md).
import path from "node:path";
import type { LoraAdapter } from "../../src/adapters/lora.ts";
import { Graph } from "../../src/engine/graph.ts";
import { openSafetensors } from "../../src/io/safetensors.ts";
import type { Batch, Model } from "../../src/models/model.ts";

export const FIXTURES = path.join(import.meta.dirname, "..", "fixtures", "hf");

/** Reads a fixture's reference batch and expected outputs. */
export function referenceBatch(dir: string) {
  const ref = openSafetensors(path.join(dir, "reference.safetensors"));
  try {
    const [batchSize, seqLen] = ref.info("input_ids").shape;
    const optional = (name: string) => (ref.tensors.has(name) ? ref.readI32(name) : undefined);
    return {
      batch: { batchSize, seqLen, inputIds: ref.readI32("input_ids"), attentionMask: optional("attention_mask"), tokenTypeIds: optional("token_type_ids") },
      labels: optional("labels") ?? ref.readI32("input_ids"),
      logits: ref.readF32("logits"),
      logitsShape: ref.info("logits").shape,
      loss: ref.readF32("loss")[0],
    };
  } finally {
    ref.close();
  }
}


/**
 * Logits, loss and the gradient of every adapter tensor (by PEFT state-dict key) for one backward
 * pass of the model's Hugging Face loss on a batch, as PEFT's reference `grad/` tensors hold them.
 */
export function adapterGradients(model: Model, adapter: LoraAdapter, batch: Batch, labels: Int32Array) {
  const g = new Graph(model.backend, { grads: true, maxNodes: model.graphNodes });
  try {
    const { logits, inputs } = model.forward(g, batch.batchSize, batch.seqLen);
    const { loss, targets } = model.buildLoss(g, logits, batch.batchSize, batch.seqLen);
    for (const t of adapter.trainable) g.param(t);
    g.output(logits);
    g.backward(loss);
    const grads = adapter.stateDict.map(([key, t]) => [key, g.grad(t)] as const);
    g.allocate();
    for (const [t, fill] of inputs.values) t.setAll(fill(batch));
    for (const [t, fill] of targets) t.setAll(fill({ labels }));
    g.compute();
    return { logits: logits.getF32(), loss: loss.getF32()[0], grads: grads.map(([key, t]) => [key, t.getF32()] as const) };
  } finally {
    g.free();
  }
}

/** Where PEFT's fixtures store the gradient of an adapter key: grad/<key with the adapter name, / for .>. */
export function peftGradientKey(key: string): string {
  return `grad/${key.replace(/\.(lora_[AB])\.weight$/, ".$1.default.weight").replaceAll(".", "/")}`;
}
