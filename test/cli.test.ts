import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { NativeAbortError, runSupervised } from "../src/engine/worker.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { maxRelError } from "./support/gradcheck.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");
const FIXTURES = path.join(ROOT, "test", "fixtures", "hf");

function tasktune(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { ...process.env, TASKTUNE_THREADS: "2" } });
}

test("tasktune forward writes the reference logits of a checkpoint", () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-cli-")), "logits.safetensors");
  const dir = path.join(FIXTURES, "llama-tiny");
  const run = tasktune("forward", "--model", dir, "--input-ids", path.join(dir, "reference.safetensors"), "--out", out);
  assert.equal(run.status, 0, run.stderr);
  const got = openSafetensors(out);
  const ref = openSafetensors(path.join(dir, "reference.safetensors"));
  assert.deepEqual(got.info("logits").shape, [2, 14, 512]);
  const want = ref.readF32("logits");
  assert.ok(maxRelError(got.readF32("logits"), want, Math.max(...want.map(Math.abs))) < 1e-4);
  assert.ok(!got.tensors.has("loss"), "no labels in the input, so no loss");
  got.close();
  ref.close();
});

test("tasktune forward names a missing option and a bad device", () => {
  const missing = tasktune("forward", "--model", "x");
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /--input-ids is required/);
  const dir = path.join(FIXTURES, "gpt2-tiny");
  const device = tasktune("forward", "--model", dir, "--input-ids", path.join(dir, "reference.safetensors"), "--out", "/tmp/x", "--device", "tpu");
  assert.match(device.stderr, /--device must be one of cpu, cuda, vulkan, auto/);
});

test("tasktune inspect --json describes a checkpoint", () => {
  const report = JSON.parse(execFileSync(process.execPath, [BIN, "inspect", path.join(FIXTURES, "bert-tiny"), "--json"], { encoding: "utf8" }));
  assert.equal(report.kind, "bert (bert family)");
  assert.equal(report.tensors.length, 41);
  assert.equal(report.parameters, report.dtypes.F32);
});

test("a native ggml abort in a worker becomes an error with ggml's message", async () => {
  const job = path.join(ROOT, "test", "support", "abort-job.ts");
  await assert.rejects(runSupervised(job, [], ["--import", "tsx"]), (err: unknown) => {
    assert.ok(err instanceof NativeAbortError);
    assert.match(err.message, /GGML_ASSERT\(ggml_can_mul_mat\(a, b\)\) failed/);
    return true;
  });
});

test("tasktune forward --adapter applies a PEFT adapter", () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-cli-")), "logits.safetensors");
  const adapter = path.join(FIXTURES, "llama-tiny-lora-copy");
  const run = tasktune("forward", "--model", path.join(FIXTURES, "llama-tiny"), "--adapter", adapter,
    "--input-ids", path.join(FIXTURES, "llama-tiny", "reference.safetensors"), "--out", out);
  assert.equal(run.status, 0, run.stderr);
  const got = openSafetensors(out);
  const ref = openSafetensors(path.join(adapter, "reference.safetensors"));
  const want = ref.readF32("logits_with_adapter");
  assert.ok(maxRelError(got.readF32("logits"), want, Math.max(...want.map(Math.abs))) < 1e-4);
  got.close();
  ref.close();
});

test("tasktune inspect reads a GGUF file's metadata and tensors", async () => {
  const { testBackend } = await import("./support/backend.ts");
  const { writeGguf } = await import("../src/io/gguf.ts");
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-cli-")), "tiny.gguf");
  writeGguf(file, {
    metadata: { "general.architecture": { type: "string", value: "llama" }, "llama.block_count": { type: "u32", value: 2 } },
    tensors: [{ name: "token_embd.weight", dtype: "f32", shape: [4, 8], data: new Float32Array(32) }],
  }, (await testBackend()).ggml);
  const report = JSON.parse(execFileSync(process.execPath, [BIN, "inspect", file, "--json"], { encoding: "utf8" }));
  assert.equal(report.kind, "GGUF v3 (llama)");
  assert.equal(report.config["llama.block_count"], 2);
  assert.deepEqual(report.tensors, [{ name: "token_embd.weight", dtype: "f32", shape: [4, 8] }]);
});
