// The task suite's cached base model (models/suite-llama, recipe suite/pretrain.yaml): it must load
// and know what it was pretrained on, or the forgetting and noise studies built on it measure nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { evaluateTasks } from "../src/eval/run.ts";
import { resolveTasks } from "../src/eval/tasks/config.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { loadModel } from "../src/models/index.ts";
import { loadTrainConfig, trainingTasks } from "../src/train/config.ts";
import { testBackend } from "./support/backend.ts";

const ROOT = path.join(import.meta.dirname, "..");
const MODEL = path.join(ROOT, "models", "suite-llama");

test("the suite's base model recalls its knowledge base and names extreme digits", async () => {
  const model = loadModel(await testBackend(), MODEL);
  try {
    const results = evaluateTasks(model, Tokenizer.load(MODEL), resolveTasks("kv-recall,extreme-digit"), { limit: 40 });
    const acc = Object.fromEntries(results.map((r) => [r.task, r.metrics.acc.value]));
    assert.ok(acc["kv-recall"] >= 0.9, `kv-recall accuracy ${acc["kv-recall"]}`);
    assert.ok(acc["extreme-digit"] >= 0.8, `extreme-digit accuracy ${acc["extreme-digit"]}`);
  } finally {
    model.free();
  }
});

test("the suite's pretraining recipe and example configs validate", () => {
  const pretrain = loadTrainConfig(path.join(ROOT, "suite", "pretrain.yaml"));
  assert.equal(pretrain.init, "random");
  assert.ok(trainingTasks(pretrain).length >= 8);
  const cocktail = loadTrainConfig(path.join(ROOT, "examples", "multitask-cocktail.yaml"));
  assert.deepEqual(trainingTasks(cocktail).map((t) => t.name), ["tint-min", "kv-recall", "extreme-digit"]);
});
