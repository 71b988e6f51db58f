// Multi-task training (METHODS.md C1): mixing rates, the mixture schedule, task configs, and a
// multi-task run end to end (per-task losses and metrics, summary, resume to the same adapter).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { BatchSchedule } from "../src/data/batches.ts";
import type { Example } from "../src/data/examples.ts";
import { MixtureSchedule, mixingRates } from "../src/data/mixture.ts";
import { loadTrainConfig, trainConfigSchema, trainingTasks } from "../src/train/config.ts";
import { runTraining } from "../src/train/run.ts";
import { tempDirs } from "./support/tmp.ts";

const ROOT = path.join(import.meta.dirname, "..");
const tempDir = tempDirs("tasktune-multitask");

/** n examples whose every token is `tag`, so a row shows which task it came from. */
function examples(n: number, tag: number, length = 5): Example[] {
  return Array.from({ length: n }, (_, i) => ({ ids: new Int32Array(length + (i % 3)).fill(tag), labels: new Int32Array(length + (i % 3)).fill(tag) }));
}

const BATCHING = { batchSize: 4, seqLen: 8, mode: "pad" as const, padId: 0, eosId: 1, seed: 5 };

test("mixing rates: proportional with caps, temperature, equal, weights", () => {
  const tasks = [{ examples: examples(100, 2) }, { examples: examples(400, 3), weight: 3 }, { examples: examples(1000, 4), cap: 500 }];
  const close = (a: number[], b: number[]) => a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-12, `${a} vs ${b}`));
  close(mixingRates(tasks, { strategy: "proportional" }), [0.1, 0.4, 0.5]);
  const t2 = [0.1, 0.4, 0.5].map(Math.sqrt);
  close(mixingRates(tasks, { strategy: "temperature", temperature: 2 }), t2.map((v) => v / t2.reduce((a, b) => a + b)));
  close(mixingRates(tasks, { strategy: "temperature", temperature: 1 }), [0.1, 0.4, 0.5]);
  close(mixingRates(tasks, { strategy: "equal" }), [1 / 3, 1 / 3, 1 / 3]);
  close(mixingRates(tasks, { strategy: "weights" }), [0.2, 0.6, 0.2]);
});

test("one task: the mixture gives BatchSchedule's batches", () => {
  const data = examples(7, 9);
  const single = new BatchSchedule(data, BATCHING);
  const mixture = new MixtureSchedule([{ name: "only", examples: data }], { ...BATCHING, strategy: "proportional" });
  for (let step = 0; step < 6; step++) {
    const [a, b] = [single.batchAt(step), mixture.batchAt(step)];
    assert.deepEqual(b.batch.inputIds, a.batch.inputIds);
    assert.deepEqual(b.labels, a.labels);
    assert.deepEqual([...b.rowTasks], [0, 0, 0, 0]);
  }
});

test("several tasks: rows follow the rates, come from their task, and batchAt does not depend on call order", () => {
  const tasks = [{ name: "a", examples: examples(50, 2) }, { name: "b", examples: examples(20, 3) }, { name: "c", examples: examples(30, 4) }];
  const options = { ...BATCHING, strategy: "equal" as const };
  const mixture = new MixtureSchedule(tasks, options);
  const counts = [0, 0, 0];
  for (let step = 0; step < 1000; step++) {
    const b = mixture.batchAt(step);
    b.rowTasks.forEach((task, row) => {
      counts[task]++;
      assert.equal(b.batch.inputIds[row * BATCHING.seqLen], task + 2, `row ${row} of step ${step} is not from task ${task}`);
    });
  }
  for (const c of counts) assert.ok(Math.abs(c / 4000 - 1 / 3) < 0.03, `row shares ${counts}`);
  const fresh = new MixtureSchedule(tasks, options);
  assert.deepEqual(fresh.batchAt(700), mixture.batchAt(700));
});

test("config: data.train or data.tasks, per-task errors name the field", () => {
  const dir = tempDir();
  const write = (data: string) => {
    const file = path.join(dir, "run.yaml");
    fs.writeFileSync(file, `model: m\nmethod: lora\ndata: ${data}\ntrain: { steps: 1, lr: 0.1 }\noutput_dir: out\n`);
    return file;
  };
  assert.throws(() => loadTrainConfig(write("{ mode: pad }")), /data: give train \(one file\) or tasks/);
  assert.throws(() => loadTrainConfig(write("{ train: a.jsonl, tasks: [{ name: a, train: a.jsonl }] }")), /not both or neither/);
  assert.throws(() => loadTrainConfig(write("{ tasks: [{ name: a, train: a.jsonl }, { name: a, train: b.jsonl }] }")), /task name "a" appears twice/);
  assert.throws(() => loadTrainConfig(write("{ tasks: [{ name: 'a b', train: a.jsonl }] }")), /data\.tasks\.0\.name/);
  assert.throws(() => loadTrainConfig(write("{ tasks: [{ name: a, train: a.jsonl, rate: 2 }] }")), /data\.tasks\.0.*rate/);
  const config = loadTrainConfig(write("{ train: sub/x.jsonl, eval_fraction: 0.1 }"));
  assert.deepEqual(trainingTasks(config), [{ name: "x", train: path.join(dir, "sub", "x.jsonl"), eval: undefined, eval_fraction: 0.1, weight: 1 }]);
});

function multiTaskConfig(out: string, steps: number, saveEvery: number) {
  return trainConfigSchema.parse({
    model: path.join(ROOT, "models", "tiny-llama"),
    method: "lora",
    lora: { r: 4, alpha: 8, dropout: 0.1, target_modules: ["q_proj", "v_proj"] },
    data: {
      tasks: [
        { name: "digits", train: path.join(ROOT, "data", "tasks", "extreme-digit", "train-200.jsonl"), eval_fraction: 0.1 },
        { name: "reviews", train: path.join(ROOT, "test", "fixtures", "data", "sst2-sample.jsonl"), eval_fraction: 0.1 },
      ],
      mixing: "temperature",
      temperature: 3,
    },
    loss: { balance: "task", focal_gamma: 2 },
    train: { steps, batch_size: 4, seq_len: 48, lr: 5e-3, schedule: "constant", eval_every: 2, save_every: saveEvery, eval_batches: 2 },
    eval_tasks: ["extreme-digit"],
    eval_limit: 12,
    output_dir: out,
  });
}

test("a multi-task run logs per-task losses and metrics, and resumes to the same adapter", async () => {
  const quiet = fs.createWriteStream("/dev/null") as unknown as NodeJS.WriteStream;
  const straight = path.join(tempDir(), "out");
  const result = await runTraining(multiTaskConfig(straight, 4, 0), { stream: quiet });
  const records = fs.readFileSync(path.join(straight, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const keys = new Set(records.flatMap((r) => Object.keys(r)));
  for (const key of ["loss/digits", "loss/reviews", "eval_loss", "eval_loss/digits", "eval_loss/reviews", "eval_acc/extreme-digit"]) {
    assert.ok(keys.has(key), `metrics.jsonl lacks ${key}: ${[...keys]}`);
  }
  assert.ok(records.some((r) => r.step === 0 && "eval_acc/extreme-digit" in r), "no before-training score");
  const summary = JSON.parse(fs.readFileSync(path.join(straight, "summary.json"), "utf8"));
  assert.deepEqual(summary.tasks, ["digits", "reviews"]);
  assert.ok(summary.peak_rss_mb > 10 && summary.wall_s > 0 && summary.trainable_params > 0 && summary.final_loss === result.finalLoss);
  assert.match(fs.readFileSync(result.reportFile, "utf8"), /Evaluation tasks before and after training/);

  const resumed = path.join(tempDir(), "out");
  await runTraining(multiTaskConfig(resumed, 2, 2), { stream: quiet });
  await runTraining(multiTaskConfig(resumed, 4, 2), { stream: quiet, resume: true });
  const bytes = (dir: string) => fs.readFileSync(path.join(dir, "adapter", "adapter_model.safetensors"));
  assert.ok(bytes(resumed).equals(bytes(straight)), "the resumed multi-task run differs from the uninterrupted one");
});
