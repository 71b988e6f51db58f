// The training loop: losses fall, the same seed reproduces the same losses, and a run resumed
// from a checkpoint ends with exactly the weights of an uninterrupted run.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { seededUniform } from "../src/engine/random.ts";
import { loadModel } from "../src/models/index.ts";
import { learningRate } from "../src/train/schedule.ts";
import { latestCheckpoint, Trainer, TRAIN_DEFAULTS, type BatchSource, type TrainOptions } from "../src/train/trainer.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES } from "./support/fixtures.ts";
import { copyTask as copyTaskOf } from "./support/tasks.ts";

const B = 2;
const S = 16;

const copyTask = copyTaskOf(B, S);

const OPTIONS: TrainOptions = { ...TRAIN_DEFAULTS, steps: 12, batchSize: B, seqLen: S, lr: 1e-2, warmup: 2, gradAccum: 2, weightDecay: 0.01 };

/** Trains; with `checkpoints`, saves there and resumes from the newest one; `crashAt` aborts the run after that step. */
async function train(method: "lora" | "dora" | "full", options: TrainOptions, checkpoints?: string, crashAt?: number) {
  const model = loadModel(await testBackend(), path.join(FIXTURES, "llama-tiny"));
  const adapter = method === "full" ? undefined : new LoraAdapter(model, loraConfig({
    r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ["q_proj", "v_proj", "down_proj"], useDora: method === "dora",
  }), { seed: 3 });
  const params = adapter ? adapter.stateDict.map(([name, tensor]) => ({ name, tensor })) : model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
  const trainer = new Trainer(model, params, options, adapter);
  const losses: number[] = [];
  try {
    const checkpoint = checkpoints ? latestCheckpoint(checkpoints) : undefined;
    if (checkpoint) trainer.loadCheckpoint(checkpoint);
    trainer.run(copyTask, checkpoints, [], {
      onStep: (r) => {
        losses.push(r.loss);
        if (r.step === crashAt) throw new Error("simulated crash");
      },
    });
    return { losses, weights: params.map((p) => p.tensor.getF32()) };
  } finally {
    trainer.free();
    adapter?.free();
    model.free();
  }
}

for (const method of ["lora", "dora", "full"] as const) {
  test(`${method}: loss falls and the same seed gives bit-identical losses`, async () => {
    const a = await train(method, OPTIONS);
    const b = await train(method, OPTIONS);
    assert.deepEqual(a.losses, b.losses);
    const head = (a.losses[0] + a.losses[1]) / 2;
    const tail = (a.losses.at(-1)! + a.losses.at(-2)!) / 2;
    assert.ok(tail < head - 0.3, `loss did not fall: ${a.losses.map((l) => l.toFixed(3)).join(" ")}`);
  });
}

test("a run stopped mid-way and resumed from its checkpoint ends with identical weights", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-resume-"));
  const options = { ...OPTIONS, saveEvery: 5 };
  const straight = await train("dora", options);
  await assert.rejects(train("dora", options, dir, 7), /simulated crash/);
  assert.equal(path.basename(latestCheckpoint(dir)!), "step-000005");
  const resumed = await train("dora", options, dir);
  assert.deepEqual(resumed.losses, straight.losses.slice(5));
  resumed.weights.forEach((w, i) => assert.deepEqual(w, straight.weights[i]));
  fs.rmSync(dir, { recursive: true, force: true });
});

test("learning-rate schedules follow transformers' warmup and decay", () => {
  assert.equal(learningRate("linear", 1, 0, 10, 110), 0);
  assert.equal(learningRate("linear", 1, 5, 10, 110), 0.5);
  assert.equal(learningRate("linear", 1, 60, 10, 110), 0.5);
  assert.ok(Math.abs(learningRate("cosine", 1, 60, 10, 110) - 0.5) < 1e-12);
  assert.equal(learningRate("constant", 2, 50, 10, 110), 2);
});

test("GPT-2 LoRA (Conv1D) and BERT classification train: loss falls", async () => {
  for (const name of ["gpt2-tiny", "bert-tiny"]) {
    const model = loadModel(await testBackend(), path.join(FIXTURES, name));
    const classify = model.kind === "sequence-classification";
    const adapter = new LoraAdapter(model, loraConfig({
      r: 4, loraAlpha: 8, targetModules: classify ? ["query", "value"] : ["c_attn", "c_fc"], modulesToSave: classify ? ["classifier"] : undefined,
    }), { seed: 1 });
    // BERT's label is whether the first token is even, a rule its first position can read.
    const data: BatchSource = classify ? {
      batchAt(i) {
        const r = seededUniform(500 + i);
        const ids = Int32Array.from({ length: B * S }, () => 10 + Math.floor(r() * 50));
        const labels = Int32Array.from({ length: B }, (_, b) => ids[b * S] % 2);
        return { batch: { batchSize: B, seqLen: S, inputIds: ids }, labels, tokens: B };
      },
    } : copyTask;
    const trainer = new Trainer(model, adapter.stateDict.map(([name, tensor]) => ({ name, tensor })), { ...OPTIONS, steps: 30, gradAccum: 1, lr: 2e-2 }, adapter);
    const losses: number[] = [];
    trainer.run(data, undefined, [], { onStep: (r) => losses.push(r.loss) });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(losses.slice(-5)) < mean(losses.slice(0, 5)) - 0.1, `${name}: ${losses.map((l) => l.toFixed(3)).join(" ")}`);
    trainer.free();
    adapter.free();
    model.free();
  }
});
