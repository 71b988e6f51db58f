// PEFT parity: logits with a PEFT-saved adapter, after merge_and_unload, and every LoRA gradient,
// against the PyTorch/PEFT reference outputs (test/fixtures/hf/README.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadAdapter } from "../src/adapters/peft-io.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { maxRelError } from "./support/gradcheck.ts";
import { adapterGradients, FIXTURES, peftGradientKey, referenceBatch } from "./support/fixtures.ts";

const BASE = path.join(FIXTURES, "llama-tiny");

/** Error relative to the reference's largest magnitude (elementwise relative error is noise near 0). */
function scaledError(got: Float32Array, want: Float32Array): number {
  return maxRelError(got, want, Math.max(...want.map(Math.abs)));
}

async function withAdapter(name: string, body: (ctx: Awaited<ReturnType<typeof setup>>) => void) {
  const ctx = await setup(name);
  try {
    body(ctx);
  } finally {
    ctx.adapter.free();
    ctx.model.free();
  }
}

async function setup(name: string) {
  const model = loadModel(await testBackend(), BASE);
  const adapter = loadAdapter(model, path.join(FIXTURES, name));
  const ref = openSafetensors(path.join(FIXTURES, name, "reference.safetensors"));
  const expected = new Map([...ref.tensors.keys()].map((k) => [k, ref.readF32(k)]));
  ref.close();
  return { model, adapter, expected, batch: referenceBatch(BASE).batch };
}

for (const name of ["llama-tiny-lora-copy", "llama-tiny-lora-reverse", "llama-tiny-dora-copy", "llama-tiny-rslora-copy"]) {
  test(`${name}: logits and loss with the PEFT adapter match`, () => withAdapter(name, ({ model, expected, batch }) => {
    const out = model.run(batch, batch.inputIds);
    const err = scaledError(out.logits, expected.get("logits_with_adapter")!);
    assert.ok(err < 1e-4, `logits error ${err}`);
    const loss = expected.get("loss")![0];
    assert.ok(Math.abs(out.loss! - loss) / loss < 1e-4, `loss ${out.loss} vs ${loss}`);
  }));
}

for (const name of ["llama-tiny-lora-copy", "llama-tiny-lora-reverse"]) {
  test(`${name}: merge_and_unload logits match, and unmerge restores the base`, () => withAdapter(name, ({ model, adapter, expected, batch }) => {
    const before = model.run(batch).logits;
    adapter.merge();
    assert.ok(scaledError(model.run(batch).logits, expected.get("logits_merged")!) < 1e-4);
    adapter.detach();
    assert.ok(scaledError(model.run(batch).logits, expected.get("logits_merged")!) < 1e-4, "merged weights alone reproduce the adapter");
    adapter.unmerge();
    const base = referenceBatch(BASE);
    assert.ok(scaledError(model.run(batch).logits, base.logits) < 1e-4, "unmerge restores the base model");
    assert.ok(scaledError(before, expected.get("logits_with_adapter")!) < 1e-4);
  }));

  test(`${name}: every LoRA gradient of the causal LM loss matches PEFT`, () => withAdapter(name, ({ model, adapter, expected, batch }) => {
    const { grads } = adapterGradients(model, adapter, batch, batch.inputIds);
    assert.equal(grads.length, 28);
    for (const [key, grad] of grads) {
      const want = expected.get(peftGradientKey(key));
      assert.ok(want, `no reference gradient ${peftGradientKey(key)}`);
      const err = scaledError(grad, want);
      assert.ok(err < 1e-4, `${key}: gradient error ${err}`);
    }
  }));
}
