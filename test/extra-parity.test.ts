// Parity for code paths the shared fixtures leave out, against references made by
// test/fixtures/extra/generate.py (PyTorch + transformers + PEFT): Qwen2 (q/k/v bias), every
// RoPE scaling type, and LoRA logits and gradients on GPT-2 (Conv1D) and BERT.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadAdapter } from "../src/adapters/peft-io.ts";
import { loadConfig, parseConfig } from "../src/io/hf-config.ts";
import { openCheckpoint, openSafetensors } from "../src/io/safetensors.ts";
import { createModel, loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { adapterGradients, FIXTURES, peftGradientKey, referenceBatch } from "./support/fixtures.ts";
import { maxRelError } from "./support/gradcheck.ts";

const EXTRA = path.join(import.meta.dirname, "fixtures", "extra");
const scaled = (got: Float32Array, want: Float32Array) => maxRelError(got, want, Math.max(...want.map(Math.abs)));

test("qwen2-tiny: logits and loss match PyTorch", async () => {
  const dir = path.join(EXTRA, "qwen2-tiny");
  const model = loadModel(await testBackend(), dir);
  try {
    const ref = referenceBatch(dir);
    const out = model.run(ref.batch, ref.labels);
    assert.ok(scaled(out.logits, ref.logits) < 1e-4, `logits error ${scaled(out.logits, ref.logits)}`);
    assert.ok(Math.abs(out.loss! - ref.loss) / ref.loss < 1e-4);
  } finally {
    model.free();
  }
});

for (const type of ["linear", "dynamic", "yarn", "llama3"]) {
  test(`RoPE ${type} scaling: logits match transformers beyond the original context`, async () => {
    const file = openSafetensors(path.join(EXTRA, `rope-${type}.safetensors`));
    const base = path.join(FIXTURES, "llama-tiny");
    const json = { ...(loadConfig(base) && JSON.parse((await import("node:fs")).readFileSync(path.join(base, "config.json"), "utf8"))),
      max_position_embeddings: 32, rope_parameters: JSON.parse(file.metadata.config) };
    const model = createModel(await testBackend(), parseConfig(json, `rope-${type}`));
    const weights = openCheckpoint(base);
    try {
      model.load(weights);
      const [batchSize, seqLen] = file.info("input_ids").shape;
      const out = model.run({ batchSize, seqLen, inputIds: file.readI32("input_ids") });
      const want = file.readF32("logits");
      assert.ok(scaled(out.logits, want) < 1e-4, `${type}: logits error ${scaled(out.logits, want)}`);
    } finally {
      weights.close();
      file.close();
      model.free();
    }
  });
}

for (const [name, base] of [["gpt2-lora", "gpt2-tiny"], ["bert-lora", "bert-tiny"]]) {
  test(`${name}: logits and every LoRA gradient match PEFT`, async () => {
    const model = loadModel(await testBackend(), path.join(FIXTURES, base));
    const adapter = loadAdapter(model, path.join(EXTRA, name));
    const refFile = openSafetensors(path.join(EXTRA, name, "reference.safetensors"));
    const { batch, labels } = referenceBatch(path.join(FIXTURES, base));
    try {
      const out = adapterGradients(model, adapter, batch, labels);
      assert.ok(scaled(out.logits, refFile.readF32("logits")) < 1e-4, "logits");
      assert.ok(Math.abs(out.loss - refFile.readF32("loss")[0]) < 1e-5, "loss");
      assert.equal(out.grads.length, [...refFile.tensors.keys()].filter((k) => k.startsWith("grad/")).length);
      for (const [key, grad] of out.grads) {
        const err = scaled(grad, refFile.readF32(peftGradientKey(key)));
        assert.ok(err < 1e-4, `${key}: gradient error ${err}`);
      }
    } finally {
      refFile.close();
      adapter.free();
      model.free();
    }
  });
}
