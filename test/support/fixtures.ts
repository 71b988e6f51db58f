// The PyTorch/PEFT reference fixtures (test/fixtures/hf/README.md).
import path from "node:path";
import { openSafetensors } from "../../src/io/safetensors.ts";

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

