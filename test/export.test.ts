// tasktune export: GGUF layout and metadata, GGUF LoRA <-> PEFT, merged safetensors against
// PyTorch's merge_and_unload, the command line, and the errors that name what cannot be exported.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { loadAdapter, saveAdapter } from "../src/adapters/peft-io.ts";
import { exportModel } from "../src/export/index.ts";
import { openGguf } from "../src/io/gguf.ts";
import { permuteRows } from "../src/io/gguf-names.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";
import { maxRelError } from "./support/gradcheck.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");
const HF = path.join(FIXTURES, "llama-tiny");
const LORA = path.join(FIXTURES, "llama-tiny-lora-copy");
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-export-"));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));
const tmp = (name: string) => path.join(TMP, name);

const scaledError = (a: Float32Array, b: Float32Array) => maxRelError(a, b, Math.max(...b.map(Math.abs)));

function reference(dir: string) {
  const ref = openSafetensors(path.join(dir, "reference.safetensors"));
  try {
    return { withAdapter: ref.readF32("logits_with_adapter"), merged: ref.tensors.has("logits_merged") ? ref.readF32("logits_merged") : undefined };
  } finally {
    ref.close();
  }
}

/** A copy of llama-tiny whose config.json / tokenizer.json are edited. */
function variant(name: string, edit: { config?: (c: Record<string, unknown>) => void; tokenizer?: (t: Record<string, unknown>) => void }): string {
  const dir = tmp(name);
  fs.cpSync(HF, dir, { recursive: true });
  for (const [file, fn] of [["config.json", edit.config], ["tokenizer.json", edit.tokenizer]] as const) {
    if (!fn) continue;
    const json = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8"));
    fn(json);
    fs.writeFileSync(path.join(dir, file), JSON.stringify(json));
  }
  return dir;
}

test("tasktune export --to gguf --dtype q8_0: llama.cpp's names, metadata and per-tensor types", () => {
  const out = tmp("cli-q8.gguf");
  const run = spawnSync(process.execPath, [BIN, "export", "--model", HF, "--to", "gguf", "--out", out, "--dtype", "q8_0", "--threads", "2"], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /wrote llama-tiny to .*cli-q8\.gguf \(21 tensors: .*q8_0.*\)/);
  return testBackend().then((backend) => {
    const file = openGguf(out, backend);
    try {
      const meta = (k: string) => file.metadata.get(k)?.value;
      assert.equal(meta("general.architecture"), "llama");
      assert.equal(meta("general.file_type"), 7);
      assert.equal(meta("llama.attention.head_count_kv"), 2);
      assert.equal(meta("llama.rope.dimension_count"), 16);
      assert.equal(meta("tokenizer.ggml.model"), "gpt2");
      assert.equal(meta("tokenizer.ggml.pre"), "gpt-2");
      assert.equal(meta("tokenizer.ggml.add_bos_token"), false);
      assert.equal((meta("tokenizer.ggml.merges") as string[])[0], "Ġ t");
      assert.deepEqual((meta("tokenizer.ggml.token_type") as number[]).slice(0, 3), [3, 3, 1]);
      // 1-D stays f32; rows of 172 (ffn_down) cannot take 32-element blocks and fall back to f16, as convert_hf_to_gguf.py does.
      assert.equal(file.info("blk.0.attn_norm.weight").ggmlType, "f32");
      assert.equal(file.info("blk.0.attn_q.weight").ggmlType, "q8_0");
      assert.equal(file.info("blk.0.ffn_down.weight").ggmlType, "f16");
      assert.deepEqual(file.info("blk.0.attn_k.weight").shape, [32, 64]);
    } finally {
      file.close();
    }
  });
});

test("tasktune export refuses what it cannot do, naming the problem", () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, "export", ...args], { encoding: "utf8" });
  const noAdapter = cli("--model", HF, "--to", "peft", "--out", tmp("x"));
  assert.equal(noAdapter.status, 1);
  assert.match(noAdapter.stderr, /--to peft converts an adapter: pass --adapter/);
  const badTo = cli("--model", HF, "--to", "onnx", "--out", tmp("x"));
  assert.match(badTo.stderr, /--to must be one of gguf, safetensors, peft, got "onnx"/);
});

test("errors: DoRA or base tensors in a GGUF LoRA, BERT, dynamic RoPE, unknown pre-tokenizer, existing --out", async () => {
  const backend = await testBackend();
  assert.throws(() => exportModel({ model: HF, adapter: path.join(FIXTURES, "llama-tiny-dora-copy"), to: "gguf", out: tmp("dora.gguf"), backend }),
    /DoRA adapter cannot be written as a llama\.cpp LoRA/);
  // A DoRA adapter can still be merged.
  exportModel({ model: HF, adapter: path.join(FIXTURES, "llama-tiny-dora-copy"), to: "gguf", merge: true, out: tmp("dora-merged.gguf"), backend });

  const model = loadModel(backend, HF);
  const withBias = new LoraAdapter(model, loraConfig({ r: 2, targetModules: ["q_proj"], modulesToSave: ["lm_head"] }), { seed: 1 });
  saveAdapter(withBias, tmp("mts"));
  withBias.free();
  model.free();
  assert.throws(() => exportModel({ model: HF, adapter: tmp("mts"), to: "gguf", out: tmp("mts.gguf"), backend }), /also trains base tensors \(base_model\.model\.lm_head\.weight\)/);

  assert.throws(() => exportModel({ model: path.join(FIXTURES, "bert-tiny"), to: "gguf", out: tmp("bert.gguf"), backend }), /BERT sequence classifiers cannot be exported to GGUF/);
  const dynamic = variant("dynamic", { config: (c) => { c.rope_parameters = { rope_type: "dynamic", factor: 2, rope_theta: 10000 }; } });
  assert.throws(() => exportModel({ model: dynamic, to: "gguf", out: tmp("dyn.gguf"), backend }), /dynamic NTK RoPE scaling has no llama\.cpp equivalent/);

  const whitespace = variant("ws", { tokenizer: (t) => { t.pre_tokenizer = { type: "Whitespace" }; } });
  assert.throws(() => exportModel({ model: whitespace, to: "gguf", out: tmp("ws.gguf"), backend }),
    /ws\/tokenizer\.json: cannot choose a llama\.cpp pre-tokenizer: .*pass the llama\.cpp pre-tokenizer name explicitly/);
  exportModel({ model: whitespace, to: "gguf", out: tmp("ws.gguf"), backend, tokenizerPre: "gpt-2" });
  assert.throws(() => exportModel({ model: whitespace, to: "gguf", out: tmp("ws.gguf"), backend, tokenizerPre: "gpt-2" }), /ws\.gguf exists \(pass --force to replace it\)/);
  exportModel({ model: whitespace, to: "gguf", out: tmp("ws.gguf"), backend, tokenizerPre: "gpt-2", overwrite: true });
  assert.throws(() => exportModel({ model: HF, to: "gguf", out: tmp("no-extension"), backend }), /needs a file name ending in \.gguf/);
  assert.deepEqual(fs.readdirSync(TMP).filter((n) => n.includes(".tmp")), [], "no temporary files left behind");
});

test("GGUF LoRA layout: convert_lora_to_gguf.py's names, shapes, alpha, and lora_b rows permuted for q/k", async () => {
  const backend = await testBackend();
  const out = tmp("lora-copy.gguf");
  exportModel({ model: HF, adapter: LORA, to: "gguf", out, backend });
  const file = openGguf(out, backend);
  const peft = openSafetensors(path.join(LORA, "adapter_model.safetensors"));
  try {
    const meta = (k: string) => file.metadata.get(k)?.value;
    assert.equal(meta("general.type"), "adapter");
    assert.equal(meta("adapter.type"), "lora");
    assert.equal(meta("adapter.lora.alpha"), 8);
    assert.equal(meta("general.architecture"), "llama");
    assert.equal(file.tensors.size, 2 * 7 * 2);
    assert.deepEqual(file.info("blk.1.ffn_down.weight.lora_a").shape, [4, 172]);
    assert.deepEqual(file.info("blk.1.ffn_down.weight.lora_b").shape, [64, 4]);
    const key = (m: string, ab: string) => `base_model.model.model.layers.0.self_attn.${m}.lora_${ab}.weight`;
    assert.deepEqual(file.readF32("blk.0.attn_v.weight.lora_a"), peft.readF32(key("v_proj", "A")));
    assert.deepEqual(file.readF32("blk.0.attn_v.weight.lora_b"), peft.readF32(key("v_proj", "B")));
    assert.deepEqual(file.readF32("blk.0.attn_q.weight.lora_a"), peft.readF32(key("q_proj", "A")));
    assert.deepEqual(file.readF32("blk.0.attn_q.weight.lora_b"), permuteRows(peft.readF32(key("q_proj", "B")), [64, 4], 4));
    assert.deepEqual(file.readF32("blk.0.attn_k.weight.lora_b"), permuteRows(peft.readF32(key("k_proj", "B")), [32, 4], 2));
  } finally {
    file.close();
    peft.close();
  }
});

for (const name of ["llama-tiny-lora-copy", "llama-tiny-rslora-copy"]) {
  test(`${name}: PEFT -> GGUF LoRA -> PEFT gives PyTorch's logits with the adapter`, async () => {
    const backend = await testBackend();
    const dir = path.join(FIXTURES, name);
    const gguf = tmp(`${name}.gguf`);
    const back = tmp(`${name}-peft`);
    exportModel({ model: HF, adapter: dir, to: "gguf", out: gguf, backend });
    exportModel({ model: HF, adapter: gguf, to: "peft", out: back, backend });
    assert.deepEqual(fs.readdirSync(back).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    const model = loadModel(backend, HF);
    try {
      const adapter = loadAdapter(model, back);
      const logits = model.run(referenceBatch(HF).batch).logits;
      const err = scaledError(logits, reference(dir).withAdapter);
      process.stdout.write(`# ${name} via GGUF LoRA and back vs PEFT (PyTorch): ${err.toExponential(2)}\n`);
      assert.ok(err < 1e-4, `${err}`);
      if (name === "llama-tiny-lora-copy") {
        // Plain LoRA comes back unchanged: same config values, same tensors.
        const config = JSON.parse(fs.readFileSync(path.join(back, "adapter_config.json"), "utf8"));
        assert.equal(config.r, 4);
        assert.equal(config.lora_alpha, 8);
        assert.deepEqual(config.target_modules, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
        const a = openSafetensors(path.join(back, "adapter_model.safetensors"));
        const b = openSafetensors(path.join(dir, "adapter_model.safetensors"));
        for (const k of b.tensors.keys()) assert.deepEqual(a.readF32(k), b.readF32(k), k);
        a.close();
        b.close();
      }
      adapter.free();
    } finally {
      model.free();
    }
  });
}

test("rank_pattern, alpha_pattern and a subset of layers survive PEFT -> GGUF LoRA -> PEFT", async () => {
  const backend = await testBackend();
  const model = loadModel(backend, HF);
  try {
    const batch = referenceBatch(HF).batch;
    const adapter = new LoraAdapter(model, loraConfig({
      r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj", "up_proj"], layersToTransform: [1], rankPattern: { v_proj: 2 }, alphaPattern: { up_proj: 3 },
      initLoraWeights: false,
    }), { seed: 7 });
    const expected = model.run(batch).logits;
    saveAdapter(adapter, tmp("patterns"));
    adapter.free();
    exportModel({ model: HF, adapter: tmp("patterns"), to: "gguf", out: tmp("patterns.gguf"), backend });
    exportModel({ model: HF, adapter: tmp("patterns.gguf"), to: "peft", out: tmp("patterns-back"), backend });
    const config = JSON.parse(fs.readFileSync(path.join(tmp("patterns-back"), "adapter_config.json"), "utf8"));
    assert.deepEqual(config.target_modules, ["model.layers.1.mlp.up_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]);
    assert.deepEqual(config.rank_pattern, { "model.layers.1.self_attn.v_proj": 2 });
    const back = loadAdapter(model, tmp("patterns-back"));
    assert.ok(scaledError(model.run(batch).logits, expected) < 1e-6);
    back.free();
  } finally {
    model.free();
  }
});

test("--to safetensors with an adapter: PyTorch's merge_and_unload logits, config.json and tokenizer files", async () => {
  const backend = await testBackend();
  const out = tmp("merged");
  exportModel({ model: HF, adapter: LORA, to: "safetensors", out, backend });
  assert.deepEqual(fs.readdirSync(out).sort(), ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
  const model = loadModel(backend, out);
  const err = scaledError(model.run(referenceBatch(HF).batch).logits, reference(LORA).merged!);
  process.stdout.write(`# merged safetensors vs PyTorch merge_and_unload: ${err.toExponential(2)}\n`);
  assert.ok(err < 1e-4, `${err}`);
  model.free();

  const bf16 = tmp("merged-bf16");
  exportModel({ model: HF, adapter: LORA, to: "safetensors", out: bf16, dtype: "bf16", backend, maxShardBytes: 100_000 });
  assert.equal(JSON.parse(fs.readFileSync(path.join(bf16, "config.json"), "utf8")).dtype, "bfloat16");
  const index = JSON.parse(fs.readFileSync(path.join(bf16, "model.safetensors.index.json"), "utf8"));
  assert.ok(new Set(Object.values(index.weight_map)).size > 1, "sharded");
  const half = loadModel(backend, bf16);
  assert.ok(scaledError(half.run(referenceBatch(HF).batch).logits, reference(LORA).merged!) < 3e-2);
  half.free();
});
