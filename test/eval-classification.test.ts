// output_type classification: a sequence-classification model's own head, argmax against gold.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { evaluateTasks } from "../src/eval/run.ts";
import { loadTask } from "../src/eval/tasks/config.ts";
import { readRows } from "../src/data/records.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES } from "./support/fixtures.ts";

test("classification tasks score a BERT classifier's predictions; causal LMs are refused", async () => {
  const dir = path.join(FIXTURES, "bert-tiny");
  const model = loadModel(await testBackend(), dir);
  const tokenizer = Tokenizer.load(dir);
  const task = loadTask(path.join(import.meta.dirname, "fixtures", "data", "classify.yaml"));
  try {
    const [result] = evaluateTasks(model, tokenizer, [task], { batchSize: 2 });
    // The same predictions, one row at a time.
    const rows = readRows(path.join(import.meta.dirname, "fixtures", "data", "classify.jsonl"));
    const correct = rows.filter(({ values }) => {
      const ids = Int32Array.from(tokenizer.encode(String(values.text)));
      const { logits } = model.run({ batchSize: 1, seqLen: ids.length, inputIds: ids });
      return logits.indexOf(Math.max(...logits)) === values.label;
    }).length;
    assert.equal(result.n, 5);
    assert.equal(result.metrics.acc.value, correct / 5);
    const llama = loadModel(await testBackend(), path.join(FIXTURES, "llama-tiny"));
    assert.throws(() => evaluateTasks(llama, tokenizer, [task]), /needs a sequence-classification model, not llama causal-lm/);
    llama.free();
  } finally {
    model.free();
  }
});
