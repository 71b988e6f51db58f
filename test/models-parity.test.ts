// Forward logits and loss of each architecture against the PyTorch reference outputs
// (test/fixtures/hf/README.md): float32, relative error under 1e-4.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { maxRelError } from "./support/gradcheck.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";


for (const name of ["llama-tiny", "gpt2-tiny", "bert-tiny"]) {
  test(`${name}: logits and loss match PyTorch`, async () => {
    const dir = path.join(FIXTURES, name);
    const model = loadModel(await testBackend(), dir);
    try {
      const ref = referenceBatch(dir);
      const out = model.run(ref.batch, ref.labels);
      assert.deepEqual(out.logitsShape, ref.logitsShape);
      // Relative to the logits' scale: elementwise relative error is meaningless for values near 0.
      const scale = Math.max(...ref.logits.map(Math.abs));
      const err = maxRelError(out.logits, ref.logits, scale);
      assert.ok(err < 1e-4, `logits relative error ${err}`);
      assert.ok(Math.abs(out.loss! - ref.loss) / ref.loss < 1e-4, `loss ${out.loss} vs ${ref.loss}`);
    } finally {
      model.free();
    }
  });
}

test("a checkpoint whose tensor shape disagrees with config.json names the tensor", async () => {
  const { loadConfig } = await import("../src/io/hf-config.ts");
  const { createModel } = await import("../src/models/index.ts");
  const dir = path.join(FIXTURES, "llama-tiny");
  const config = { ...loadConfig(dir), intermediateSize: 170 } as ReturnType<typeof loadConfig>;
  const model = createModel(await testBackend(), config);
  const { openCheckpoint } = await import("../src/io/safetensors.ts");
  const checkpoint = openCheckpoint(dir);
  try {
    assert.throws(() => model.load(checkpoint), /model\.layers\.0\.mlp\.gate_proj\.weight has shape \[172, 64\] but the config implies \[170, 64\]/);
  } finally {
    checkpoint.close();
    model.free();
  }
});

test("token ids outside the vocabulary are refused before ggml sees them", async () => {
  const model = loadModel(await testBackend(), path.join(FIXTURES, "gpt2-tiny"));
  try {
    assert.throws(() => model.run({ batchSize: 1, seqLen: 2, inputIds: Int32Array.of(3, 512) }), /input_ids\[1\] = 512 is outside the vocabulary \[0, 512\)/);
  } finally {
    model.free();
  }
});
