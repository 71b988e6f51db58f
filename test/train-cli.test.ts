// `tasktune train` end to end: config validation, the run directory, and a run killed mid-way
// (SIGKILL, no chance to clean up) that --resume brings to the same adapter as an uninterrupted run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadTrainConfig } from "../src/train/config.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");

function writeConfig(dir: string, extra = ""): string {
  const file = path.join(dir, "run.yaml");
  fs.writeFileSync(file, `model: ${path.join(ROOT, "models", "tiny-llama")}
method: dora
lora: { r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj] }
data: { train: ${path.join(ROOT, "test", "fixtures", "data", "sst2-sample.jsonl")}, eval_fraction: 0.1 }
train: { steps: 40, batch_size: 8, seq_len: 64, lr: 5.0e-3, warmup: 4, save_every: 10, eval_every: 20, eval_batches: 2 }
eval: { file: ${path.join(ROOT, "test", "fixtures", "data", "sst2-dev-sample.jsonl")}, choices: [" negative", " positive"] }
output_dir: out
${extra}`);
  return file;
}

test("config errors name the key", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-config-"));
  const file = writeConfig(dir, "unknown_key: 1\n");
  assert.throws(() => loadTrainConfig(file), /run\.yaml: .*unknown_key/);
  const good = writeConfig(dir);
  assert.throws(() => loadTrainConfig(good, ["train.lr=fast"]), /train\.lr: .*number/);
  assert.equal(loadTrainConfig(good, ["train.steps=7"]).train.steps, 7);
});

test("a run killed mid-way resumes to the same adapter as an uninterrupted run", async () => {
  const straightDir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-train-"));
  const straight = spawnSync(process.execPath, [BIN, "train", writeConfig(straightDir)], { encoding: "utf8" });
  assert.equal(straight.status, 0, straight.stderr);
  const out = path.join(straightDir, "out");
  for (const file of ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.jsonl", "report.html", "config.yaml"]) {
    assert.ok(fs.existsSync(path.join(out, file)), `run directory lacks ${file}`);
  }
  const metrics = fs.readFileSync(path.join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(metrics.some((m) => m.step === 0 && "eval_accuracy" in m) && metrics.some((m) => m.step === 40 && "eval_loss" in m));

  const killedDir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-train-"));
  const config = writeConfig(killedDir);
  const child = spawn(process.execPath, [BIN, "train", config], { stdio: "ignore" });
  const checkpoint = path.join(killedDir, "out", "checkpoints", "step-000010");
  while (!fs.existsSync(checkpoint)) await new Promise((r) => setTimeout(r, 10));
  // Kill the whole worker tree, as a crash would.
  spawnSync("pkill", ["-KILL", "-f", config]);
  await new Promise((r) => child.on("close", r));
  assert.ok(!fs.existsSync(path.join(killedDir, "out", "adapter")), "the run was killed before it finished");
  const resumed = spawnSync(process.execPath, [BIN, "train", config, "--resume"], { encoding: "utf8" });
  assert.equal(resumed.status, 0, resumed.stderr);
  const bytes = (dir: string) => fs.readFileSync(path.join(dir, "out", "adapter", "adapter_model.safetensors"));
  assert.ok(bytes(killedDir).equals(bytes(straightDir)), "resumed adapter differs from the uninterrupted one");
  const lines = (dir: string) => fs.readFileSync(path.join(dir, "out", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const strip = (rows: Record<string, number>[]) => rows.map(({ tokens_per_s: _t, elapsed_s: _e, ...rest }) => rest);
  assert.deepEqual(strip(lines(killedDir)), strip(lines(straightDir)), "metrics.jsonl reads as if never interrupted");
});
