// Full-model merges: parity with the PEFT merge_utils fixtures, streaming into sharded and atomic
// output, mismatched inputs, config validation, base+adapter inputs, the CLI, and peak memory.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel } from "../src/models/index.ts";
import { fromFloat32 } from "../src/io/dtype.ts";
import { openCheckpoint, openSafetensors, writeSafetensors, type TensorData } from "../src/io/safetensors.ts";
import { mergeModels, parseMergeConfig, loadMergeConfig, type ModelMergeConfig } from "../src/merge/index.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BASE = path.join(FIXTURES, "llama-tiny");
const COPY = path.join(FIXTURES, "llama-tiny-ft-copy");
const REVERSE = path.join(FIXTURES, "llama-tiny-ft-reverse");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-merge-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const outDir = () => path.join(tmp, `out-${counter++}`);

function config(raw: Record<string, unknown>): ModelMergeConfig {
  const c = parseMergeConfig(raw, "test.yaml", FIXTURES);
  assert.equal(c.kind, "model");
  return c as ModelMergeConfig;
}

const twoFineTunes = (method: string, parameters: Record<string, unknown> = {}) => config({
  merge_method: method,
  base_model: "llama-tiny",
  models: [{ model: "llama-tiny-ft-copy", parameters: { weight: 1, ...parameters } }, { model: "llama-tiny-ft-reverse", parameters: { weight: 1, ...parameters } }],
});

async function merge(c: ModelMergeConfig, options: Partial<Parameters<typeof mergeModels>[2]> = {}) {
  const warnings: string[] = [];
  const out = outDir();
  const result = mergeModels(c, out, { backend: await testBackend(), warn: (m) => warnings.push(m), ...options });
  return { out, result, warnings };
}

/** Largest |a - b| over the tensor relative to its largest |b|, worst tensor. */
function stateDictError(dir: string, reference: string): { error: number; tensor: string } {
  const got = openCheckpoint(dir);
  const want = openSafetensors(reference);
  let worst = { error: 0, tensor: "" };
  try {
    assert.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort());
    for (const name of want.tensors.keys()) {
      const a = got.readF32(name), b = want.readF32(name);
      let diff = 0, scale = 0;
      for (let i = 0; i < b.length; i++) {
        diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
        scale = Math.max(scale, Math.abs(b[i]!));
      }
      if (diff / scale > worst.error || !worst.tensor) worst = { error: diff / scale, tensor: name };
    }
  } finally {
    got.close();
    want.close();
  }
  return worst;
}

for (const [fixture, method, parameters] of [
  ["task_arithmetic", "task_arithmetic", {}],
  ["ties_d0.5", "ties", { density: 0.5 }],
  ["magnitude_prune_d0.5", "magnitude_prune", { density: 0.5 }],
] as const) {
  test(`${method} matches PEFT merge_utils (llama-tiny-merge-${fixture})`, async () => {
    const { out, result } = await merge(twoFineTunes(method, parameters));
    const { error, tensor } = stateDictError(out, path.join(FIXTURES, `llama-tiny-merge-${fixture}.safetensors`));
    assert.ok(error < 1e-5, `${tensor}: error ${error}`);
    assert.equal(result.tensors, 21);
    // a loadable Hugging Face folder: config, tokenizer, the merge config
    for (const file of ["config.json", "tokenizer.json", "tokenizer_config.json", "mergekit_config.yml", "model.safetensors"]) {
      assert.ok(fs.existsSync(path.join(out, file)), file);
    }
    loadModel(await testBackend(), out).free();
  });
}

test("a sharded output has its index; shards hold the same tensors as one file", async () => {
  const c = twoFineTunes("ties", { density: 0.5 });
  const single = await merge(c);
  const progress: number[] = [];
  const sharded = await merge(c, { maxShardBytes: 150_000, onProgress: (p) => progress.push(p.tensorsDone) });
  const files = fs.readdirSync(sharded.out);
  const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length > 2, files.join(", "));
  const index = JSON.parse(fs.readFileSync(path.join(sharded.out, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string>; metadata: { total_size: number } };
  assert.equal(Object.keys(index.weight_map).length, 21);
  assert.deepEqual(new Set(Object.values(index.weight_map)), new Set(shards));
  const a = openCheckpoint(single.out), b = openCheckpoint(sharded.out);
  for (const name of a.tensors.keys()) assert.deepEqual(b.readF32(name), a.readF32(name), name);
  a.close();
  b.close();
  assert.deepEqual(progress, Array.from({ length: 21 }, (_, i) => i + 1));
  assert.equal(sharded.result.bytesWritten, index.metadata.total_size);
});

test("lines scales each layer's task vector from alpha (first layer, embeddings) to beta (last layer, head)", async () => {
  const arithmetic = await merge(twoFineTunes("task_arithmetic"));
  const lines = await merge(config({
    merge_method: "lines", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy" }, { model: "llama-tiny-ft-reverse" }],
    parameters: { alpha: 0.25, beta: 1.5 },
  }));
  const base = openCheckpoint(BASE), ta = openCheckpoint(arithmetic.out), got = openCheckpoint(lines.out);
  for (const [name, scale] of [["model.embed_tokens.weight", 0.25], ["model.layers.0.mlp.up_proj.weight", 0.25], ["model.layers.1.self_attn.q_proj.weight", 1.5], ["lm_head.weight", 1.5], ["model.norm.weight", 1.5]] as const) {
    const b = base.readF32(name), t = ta.readF32(name), l = got.readF32(name);
    const err = Math.max(...l.map((v, i) => Math.abs(v - (b[i]! + scale * (t[i]! - b[i]!)))));
    assert.ok(err < 1e-6, `${name}: ${err}`);
  }
  for (const c of [base, ta, got]) c.close();
});

test("per-tensor filter overrides and gradients apply by tensor name and layer", async () => {
  // density 1 (no trimming) on attention, 0 on mlp of layer 0 rising to 1 at layer 1, task arithmetic elsewhere
  const c = config({
    merge_method: "magnitude_prune", base_model: "llama-tiny",
    models: [{ model: "llama-tiny-ft-copy", parameters: { weight: 1 } }, { model: "llama-tiny-ft-reverse", parameters: { weight: 1 } }],
    parameters: { density: [{ filter: "self_attn", value: 1 }, { filter: "mlp", value: [0, 1] }, { value: 1 }] },
  });
  const { out } = await merge(c);
  const ta = await merge(twoFineTunes("task_arithmetic"));
  const base = openCheckpoint(BASE), got = openCheckpoint(out), want = openCheckpoint(ta.out);
  assert.deepEqual(got.readF32("model.layers.0.self_attn.q_proj.weight"), want.readF32("model.layers.0.self_attn.q_proj.weight"));
  assert.deepEqual(got.readF32("model.layers.1.mlp.up_proj.weight"), want.readF32("model.layers.1.mlp.up_proj.weight"));
  assert.deepEqual(got.readF32("model.layers.0.mlp.up_proj.weight"), base.readF32("model.layers.0.mlp.up_proj.weight"), "density 0 keeps no delta");
  for (const x of [base, got, want]) x.close();
});

// ---------------------------------------------------------------------------------------------
// Mismatched inputs

/** A copy of a checkpoint with tensors changed or removed, plus its config and tokenizer. */
function variant(from: string, name: string, edit: (tensors: TensorData[]) => TensorData[]): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(from, "config.json"), path.join(dir, "config.json"));
  const source = openCheckpoint(from);
  const tensors = [...source.tensors.values()].map((info) => ({ name: info.name, dtype: info.dtype, shape: info.shape, data: source.readF32(info.name) as TensorData["data"] }));
  source.close();
  writeSafetensors(path.join(dir, "model.safetensors"), edit(tensors));
  return dir;
}

test("inputs that do not line up are errors naming the tensor, and leave no output behind", async () => {
  const missing = variant(REVERSE, "missing", (ts) => ts.filter((t) => t.name !== "model.layers.1.mlp.down_proj.weight"));
  const shape = variant(REVERSE, "shape", (ts) => ts.map((t) => (t.name === "model.layers.0.mlp.up_proj.weight" ? { ...t, shape: [t.shape[1]!, t.shape[0]!] } : t)));
  const half = variant(REVERSE, "half", (ts) => ts.map((t) => (t.name === "model.norm.weight" ? { ...t, dtype: "F16" as const, data: fromFloat32("F16", t.data as Float32Array) } : t)));
  const smallVocab = variant(REVERSE, "small-vocab", (ts) => ts.map((t) => (t.name === "lm_head.weight" ? { ...t, shape: [500, 64], data: (t.data as Float32Array).subarray(0, 500 * 64) } : t)));
  const backend = await testBackend();
  const run = (other: string, extra: Record<string, unknown> = {}) => {
    const out = outDir();
    const c = config({ merge_method: "task_arithmetic", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy", parameters: { weight: 1 } }, { model: other, parameters: { weight: 1 } }], ...extra });
    try {
      mergeModels(c, out, { backend, warn: () => {} });
    } catch (err) {
      assert.ok(!fs.existsSync(out), "no output after a failed merge");
      assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes(".tmp-")), [], "no temporary folder left");
      throw err;
    }
  };
  assert.throws(() => run(missing), /tensor "model\.layers\.1\.mlp\.down_proj\.weight" is in base_model .* but missing from model .*missing/);
  assert.throws(() => run(shape), /tensor "model\.layers\.0\.mlp\.up_proj\.weight": shape \[64, 172\] in model .* differs from \[172, 64\]/);
  assert.throws(() => run(half), /tensor "model\.norm\.weight": dtype F16 in model .* differs from F32 .*set dtype:/);
  assert.throws(() => run(smallVocab), /tensor "lm_head\.weight": vocabulary size 500 in model .* is smaller than 512/);
  // with dtype set, mixed storage dtypes are cast to it
  run(half, { dtype: "float32" });
});

test("a larger vocabulary is cut to the base's rows (mergekit's embedding rule), with a warning", async () => {
  const big = variant(REVERSE, "big-vocab", (ts) => ts.map((t) => {
    if (t.name !== "model.embed_tokens.weight") return t;
    const data = new Float32Array(520 * 64);
    data.set(t.data as Float32Array);
    data.fill(9, 512 * 64);
    return { ...t, shape: [520, 64], data };
  }));
  const c = config({ merge_method: "task_arithmetic", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy", parameters: { weight: 1 } }, { model: big, parameters: { weight: 1 } }] });
  const { out, warnings } = await merge(c);
  assert.match(warnings.join("\n"), /model\.embed_tokens\.weight.*520 rows; using its first 512/);
  const { error } = stateDictError(out, path.join(FIXTURES, "llama-tiny-merge-task_arithmetic.safetensors"));
  assert.ok(error < 1e-5);
});

test("a non-empty output folder is kept unless overwrite, then replaced whole", async () => {
  const out = outDir();
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, "stale.txt"), "x");
  const backend = await testBackend();
  const c = twoFineTunes("task_arithmetic");
  assert.throws(() => mergeModels(c, out, { backend }), /exists and is not empty \(pass --force/);
  mergeModels(c, out, { backend, overwrite: true });
  assert.ok(!fs.existsSync(path.join(out, "stale.txt")));
  assert.ok(fs.existsSync(path.join(out, "model.safetensors")));
});

// ---------------------------------------------------------------------------------------------
// Config validation

test("config errors name the key", async () => {
  const bad = (raw: Record<string, unknown>, pattern: RegExp) => assert.throws(() => parseMergeConfig(raw, "m.yaml", FIXTURES), pattern);
  const models = [{ model: "llama-tiny-ft-copy", parameters: { weight: 1 } }];
  bad({ merge_method: "ties", base_model: "llama-tiny", models, weigths: 1 }, /m\.yaml: weigths: unknown key/);
  bad({ merge_method: "ties", models: [{ model: "x", paramters: {} }] }, /models\[0\]\.paramters: unknown key/);
  bad({ merge_method: "ties", models: [{ model: "x", parameters: { weight: "heavy" } }] }, /models\[0\]\.parameters\.weight: expected a number/);
  bad({ merge_method: "ties", models: [{ model: "x", parameters: { density: [{ filtre: "mlp", value: 1 }] } }] }, /models\[0\]\.parameters\.density/);
  bad({ merge_method: "ties", models, dtype: "float8" }, /dtype: must be one of float32/);
  bad({ merge_method: "ties", models: [] }, /models: .*>=1|models: Too small/i);
  bad({ merge_method: "ties", slices: [] }, /slices: layer slices .* not supported/);
  bad({ merge_method: "ties", models, tokenizer_source: "union" }, /tokenizer_source: "union"/);
  bad({ merge_method: "ties", base_model: "llama-tiny", adapters: [{ adapter: "x", weight: 1 }] }, /parameters\.density: required by merge_method ties/);
  bad({ merge_method: "concat", base_model: "llama-tiny", adapters: [{ adapter: "x", weight: 1 }] }, /merge_method: /);
  bad({ merge_method: "svd", base_model: "llama-tiny", adapters: [{ adapter: "x" }] }, /adapters\[0\]\.weight/);

  const backend = await testBackend();
  const run = (raw: Record<string, unknown>) => mergeModels(config(raw), outDir(), { backend, warn: () => {} });
  assert.throws(() => run({ merge_method: "tie", base_model: "llama-tiny", models }), /unknown merge_method "tie"/);
  assert.throws(() => run({ merge_method: "ties", models }), /base_model: merge_method ties needs a base model/);
  assert.throws(() => run({ merge_method: "ties", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy", parameters: { densty: 0.5, weight: 1 } }] }),
    /models\[0\]\.parameters\.densty: unknown parameter \(ties takes/);
  assert.throws(() => run({ merge_method: "ties", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy", parameters: { density: 0.5 } }] }),
    /model .*llama-tiny-ft-copy: parameter weight is required by ties \(tensor "/);
  assert.throws(() => run({ merge_method: "slerp", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy" }, { model: "llama-tiny-ft-reverse" }], parameters: { t: 0.5 } }),
    /models: merge_method slerp takes exactly 1 model besides base_model, got 2/);
  assert.throws(() => run({ merge_method: "model_stock", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy" }] }), /model_stock takes at least 2 models/);
  // a parameter of another method is ignored with a warning, as mergekit ignores it
  const warnings: string[] = [];
  mergeModels(config({ merge_method: "task_arithmetic", base_model: "llama-tiny", models: [{ model: "llama-tiny-ft-copy", parameters: { weight: 1, gamma: 0.1 } }] }),
    outDir(), { backend, warn: (m) => warnings.push(m) });
  assert.match(warnings.join(), /models\[0\]\.parameters\.gamma is ignored: task_arithmetic does not use it/);
});

test("YAML files resolve paths against their folder; the example configs parse", () => {
  for (const file of fs.readdirSync(path.join(ROOT, "examples")).filter((f) => f.startsWith("merge-"))) {
    const c = loadMergeConfig(path.join(ROOT, "examples", file));
    const paths = c.kind === "model" ? [c.baseModel!, ...c.models.map((m) => m.model)] : [c.baseModel, ...c.adapters.map((a) => a.adapter)];
    for (const p of paths) assert.ok(fs.existsSync(p), `${file}: ${p}`);
  }
});

// ---------------------------------------------------------------------------------------------
// base+adapter inputs, CLI

test("model+adapter applies the LoRA before merging (merge_and_unload of the adapter)", async () => {
  const c = config({ merge_method: "linear", models: [{ model: "llama-tiny+llama-tiny-lora-copy", parameters: { weight: 1 } }] });
  const { out } = await merge(c);
  const model = loadModel(await testBackend(), out);
  try {
    const { batch } = referenceBatch(BASE);
    const want = openSafetensors(path.join(FIXTURES, "llama-tiny-lora-copy", "reference.safetensors")).readF32("logits_merged");
    const got = model.run(batch).logits;
    const scale = Math.max(...want.map(Math.abs));
    const err = Math.max(...got.map((v, i) => Math.abs(v - want[i]!))) / scale;
    assert.ok(err < 1e-4, `logits error ${err}`);
  } finally {
    model.free();
  }
});

test("tasktune merge runs a YAML config and prints progress; a bad config exits 1 naming the key", () => {
  const yaml = path.join(tmp, "cli.yaml");
  fs.writeFileSync(yaml, `merge_method: ties\nbase_model: ${BASE}\nmodels:\n  - model: ${COPY}\n    parameters: {weight: 1, density: 0.5}\n  - model: ${REVERSE}\n    parameters: {weight: 1, density: 0.5}\n`);
  const out = path.join(tmp, "cli-out");
  const bin = path.join(ROOT, "bin", "tasktune.js");
  const env = { ...process.env, TASKTUNE_THREADS: "1" };
  const run = spawnSync(process.execPath, [bin, "merge", yaml, "--out", out, "--max-shard-size", "300kB"], { encoding: "utf8", env });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /merge: 21\/21 tensors \| [\d.]+ MB of [\d.]+ MB read \| .*\/s/);
  assert.ok(fs.existsSync(path.join(out, "model.safetensors.index.json")));
  assert.ok(stateDictError(out, path.join(FIXTURES, "llama-tiny-merge-ties_d0.5.safetensors")).error < 1e-5);
  fs.writeFileSync(yaml, "merge_method: ties\nmodels:\n  - model: x\n    parameters: {weight: one}\n");
  const bad = spawnSync(process.execPath, [bin, "merge", yaml, "--out", path.join(tmp, "cli-bad")], { encoding: "utf8", env });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /models\[0\]\.parameters\.weight/);
});

// ---------------------------------------------------------------------------------------------
// Memory

test("peak memory of a streamed merge stays near a few tensors, not the models", () => {
  // Four generated checkpoints (base + 3 fine-tunes) of 40 tensors of 2 MB (80 MB each, 320 MB in
  // all) in 16 MB shards; a TIES merge in a fresh child process reports its peak RSS above the
  // RSS it had just before merging.
  const dir = path.join(tmp, "memory");
  const job = path.join(ROOT, "test", "fixtures", "merge", "memory-job.ts");
  const env = { ...process.env, TASKTUNE_THREADS: "2", MEMJOB_TENSORS: "40", MEMJOB_SHAPE: "512,1024" };
  const child = (mode: string) => spawnSync(process.execPath, ["--import", "tsx", job, mode, dir], { encoding: "utf8", cwd: ROOT, env });
  const generate = child("generate");
  assert.equal(generate.status, 0, generate.stderr);
  const run = child("merge");
  assert.equal(run.status, 0, run.stderr);
  const report = JSON.parse(run.stdout.trim().split("\n").pop()!) as { tensorBytes: number; modelBytes: number; inputs: number; peakAboveStart: number };
  // METHODS.md A4's criterion: a merge never holds two full models in RAM (holding its 4 inputs
  // would take 4 models). Streamed, it holds a few tensors at a time plus V8 and allocator slack:
  // measured 95-134 MB here, depending on when V8 collects, and the same for 24 and 72 tensors per model.
  const bound = 2 * report.modelBytes;
  assert.ok(report.peakAboveStart < bound, `peak ${(report.peakAboveStart / 1e6).toFixed(0)} MB above start, two models are ${(bound / 1e6).toFixed(0)} MB`);
  fs.rmSync(dir, { recursive: true, force: true });
});
