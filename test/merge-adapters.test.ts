// Adapter merges with PEFT's add_weighted_adapter semantics: logits of llama-tiny with the merged
// adapter against PyTorch/PEFT (test/fixtures/hf and test/fixtures/merge/generate-adapters.py.txt).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadAdapter } from "../src/adapters/peft-io.ts";
import { readLoraConfig } from "../src/adapters/peft-config.ts";
import { openCheckpoint, openSafetensors } from "../src/io/safetensors.ts";
import { mergeAdapters, parseMergeConfig, type AdapterMergeConfig } from "../src/merge/index.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";

const BASE = path.join(FIXTURES, "llama-tiny");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-adapter-merge-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const REFERENCE = openSafetensors(path.join(import.meta.dirname, "fixtures", "merge", "adapter-merge-reference.safetensors"));

function config(mergeMethod: string, weights: [number, number], parameters: Record<string, unknown> = {}): AdapterMergeConfig {
  return parseMergeConfig({
    merge_method: mergeMethod, base_model: "llama-tiny",
    adapters: [{ adapter: "llama-tiny-lora-copy", weight: weights[0] }, { adapter: "llama-tiny-lora-reverse", weight: weights[1] }],
    parameters,
  }, "adapters.yaml", FIXTURES) as AdapterMergeConfig;
}

async function merge(c: AdapterMergeConfig, seed?: number) {
  const out = path.join(tmp, `out-${counter++}`);
  const result = mergeAdapters(c, out, { backend: await testBackend(), seed, warn: () => {} });
  return { out, result };
}

/** Logits of llama-tiny with the adapter in `dir` on the reference batch. */
async function logits(dir: string): Promise<Float32Array> {
  const model = loadModel(await testBackend(), BASE);
  try {
    loadAdapter(model, dir);
    return model.run(referenceBatch(BASE).batch).logits;
  } finally {
    model.free();
  }
}

function scaledError(got: Float32Array, want: Float32Array): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

for (const kind of ["linear", "cat", "ties"]) {
  test(`${kind} merge gives PEFT's logits (llama-tiny-adapter-merge-${kind})`, async () => {
    const { out, result } = await merge(config(kind, [0.7, 0.5], kind === "ties" ? { density: 0.5 } : {}));
    const want = openSafetensors(path.join(FIXTURES, `llama-tiny-adapter-merge-${kind}`, "reference.safetensors")).readF32("logits");
    const err = scaledError(await logits(out), want);
    assert.ok(err < 1e-4, `logits error ${err}`);
    // PEFT's config rules: r = lora_alpha = the new rank (the sum of ranks for cat), the union of target modules
    const cfg = readLoraConfig(out);
    assert.equal(cfg.r, kind === "cat" ? 8 : 4);
    assert.equal(cfg.loraAlpha, cfg.r);
    assert.equal(result.rank, cfg.r);
    assert.deepEqual([...cfg.targetModules].sort(), ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
    const peftConfig = JSON.parse(fs.readFileSync(path.join(FIXTURES, `llama-tiny-adapter-merge-${kind}`, `merged_${kind}`, "adapter_config.json"), "utf8"));
    assert.equal(cfg.r, peftConfig.r);
  });
}

const MORE: [string, string, [number, number], Record<string, unknown>][] = [
  ["svd", "svd", [0.7, 0.5], {}],
  ["svd_r8", "svd", [0.7, 0.5], { svd_rank: 8 }],
  ["ties_svd", "ties_svd", [0.7, 0.5], { density: 0.5 }],
  ["magnitude_prune_svd", "magnitude_prune_svd", [0.7, 0.5], { density: 0.3 }],
  ["magnitude_prune", "magnitude_prune", [0.7, 0.5], { density: 0.3 }],
  ["linear_negative", "linear", [0.9, -0.4], {}],
  ["cat_negative", "cat", [0.9, -0.4], {}],
  ["ties_frequency", "ties", [0.9, -0.4], { density: 0.7, majority_sign_method: "frequency" }],
];

for (const [reference, kind, weights, parameters] of MORE) {
  test(`${kind} ${JSON.stringify({ weights, ...parameters })} gives PEFT's logits (${reference})`, async () => {
    const { out, result } = await merge(config(kind, weights, parameters));
    const err = scaledError(await logits(out), REFERENCE.readF32(reference));
    assert.ok(err < 1e-4, `logits error ${err}`);
    if (kind.endsWith("svd")) assert.ok(result.svdResidual! < 1e-6, `svd residual ${result.svdResidual}`);
  });
}

test("dare merges are reproducible from the seed and differ between seeds", async () => {
  const c = config("dare_ties", [0.7, 0.5], { density: 0.5 });
  const read = (dir: string) => {
    const ckpt = openCheckpoint(dir, "adapter_model.safetensors");
    const values = [...ckpt.tensors.keys()].map((k) => ckpt.readF32(k));
    ckpt.close();
    return values;
  };
  const a = read((await merge(c, 1)).out);
  assert.deepEqual(read((await merge(c, 1)).out), a);
  assert.notDeepEqual(read((await merge(c, 2)).out), a);
  // the SVD variant loads and runs
  const svd = await merge(config("dare_linear_svd", [0.7, 0.5], { density: 0.5 }), 1);
  assert.ok((await logits(svd.out)).every(Number.isFinite));
});

test("adapters that cannot be merged are errors naming the reason", async () => {
  const backend = await testBackend();
  const run = (raw: Record<string, unknown>) => mergeAdapters(parseMergeConfig(raw, "a.yaml", FIXTURES) as AdapterMergeConfig, path.join(tmp, `bad-${counter++}`), { backend });
  const adapters = [{ adapter: "llama-tiny-lora-copy", weight: 1 }, { adapter: "llama-tiny-rslora-copy", weight: 1 }];
  // the rsLoRA fixture targets q_proj and v_proj only: still rank 4, so linear works over the union
  assert.doesNotThrow(() => run({ merge_method: "linear", base_model: "llama-tiny", adapters }));
  assert.throws(() => run({ merge_method: "linear", base_model: "gpt2-tiny", adapters }),
    /tensor "model\.layers\.0\.[a-z_.]+\.weight": adapter .* base_model .*gpt2-tiny has no such tensor/);
  assert.throws(() => run({ merge_method: "linear", base_model: "llama-tiny", adapters: [{ adapter: "llama-tiny-dora-copy", weight: 1 }] }), /use_dora/);
  assert.throws(() => run({ merge_method: "svd", base_model: "llama-tiny", adapters, parameters: { svd_rank: 100 } }), /svd rank 100 exceeds min\(out, in\) = 64/);
});
