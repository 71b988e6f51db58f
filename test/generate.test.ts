// Generation with a KV cache: greedy output equals decoding by re-running the whole sequence
// without a cache, for every row of a left-padded batch; sampling is reproducible from its seed.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { Generator } from "../src/eval/generate.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { loadModel } from "../src/models/index.ts";
import type { Model } from "../src/models/model.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES } from "./support/fixtures.ts";

/** Greedy decoding the slow way: a full forward pass per new token. */
function greedyWithoutCache(model: Model, prompt: number[], steps: number): number[] {
  const ids = [...prompt];
  for (let i = 0; i < steps; i++) {
    const { logits } = model.run({ batchSize: 1, seqLen: ids.length, inputIds: Int32Array.from(ids) });
    const last = logits.subarray((ids.length - 1) * model.config.vocabSize);
    let best = 0;
    for (let v = 1; v < last.length; v++) if (last[v] > last[best]) best = v;
    ids.push(best);
  }
  return ids.slice(prompt.length);
}

const PROMPTS = ["Permission is hereby granted", "THE SOFTWARE IS PROVIDED", "Copyright (c) 2024 the authors. All rights"];

for (const name of ["llama-tiny", "gpt2-tiny"]) {
  test(`${name}: cached greedy generation equals uncached decoding, row by row`, async () => {
    const dir = path.join(FIXTURES, name);
    const model = loadModel(await testBackend(), dir);
    const tokenizer = Tokenizer.load(dir);
    const generator = new Generator(model, tokenizer, { batchSize: 4, maxLength: 64 });
    try {
      const out = generator.generate(PROMPTS, { maxNewTokens: 12 });
      PROMPTS.forEach((prompt, i) => {
        const expected = greedyWithoutCache(model, tokenizer.encode(prompt), 12);
        const eos = expected.indexOf(tokenizer.eosId ?? -1);
        assert.deepEqual(out[i].tokens, eos >= 0 ? expected.slice(0, eos) : expected, `row ${i}`);
        assert.equal(out[i].text, tokenizer.decode(out[i].tokens, { skipSpecialTokens: true }));
      });
    } finally {
      generator.free();
      model.free();
    }
  });
}

test("stop strings cut the text; sampling with a seed is reproducible", async () => {
  const dir = path.join(FIXTURES, "llama-tiny");
  const model = loadModel(await testBackend(), dir);
  const tokenizer = Tokenizer.load(dir);
  const generator = new Generator(model, tokenizer, { batchSize: 2, maxLength: 64 });
  try {
    const greedy = generator.generate([PROMPTS[0]], { maxNewTokens: 16 })[0];
    const stop = greedy.text.slice(3, 5);
    const stopped = generator.generate([PROMPTS[0]], { maxNewTokens: 16, stop: [stop] })[0];
    assert.equal(stopped.finishReason, "stop");
    assert.equal(stopped.text, greedy.text.slice(0, greedy.text.indexOf(stop)));
    const sample = (seed: number) => generator.generate(PROMPTS, { maxNewTokens: 10, temperature: 0.9, topK: 40, topP: 0.95, seed }).map((g) => g.text);
    assert.deepEqual(sample(7), sample(7));
    assert.notDeepEqual(sample(7), sample(8));
  } finally {
    generator.free();
    model.free();
  }
});
