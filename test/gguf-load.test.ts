// GGUF files tasktune did not write load for evaluation and training: llama-tiny converted by
// llama.cpp's own convert_hf_to_gguf.py (test/fixtures/gguf/README.md), f32 and q8_0 (quantized by
// gguf-py's numpy code, not ggml), gives the PyTorch reference logits, the same tokenizer and the
// same training run as the Hugging Face folder. Our own exports round-trip exactly.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { exportModel } from "../src/export/index.ts";
import { openGguf } from "../src/io/gguf.ts";
import { configFromGguf, permuteRows } from "../src/io/gguf-names.ts";
import { loadConfig } from "../src/io/hf-config.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { loadGgufTokenizer, loadTokenizerFor, openGgufWeights } from "../src/models/gguf-loader.ts";
import { loadModel } from "../src/models/index.ts";
import { Trainer, TRAIN_DEFAULTS } from "../src/train/trainer.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";
import { copyTask } from "./support/tasks.ts";
import { maxRelError } from "./support/gradcheck.ts";

const GGUF_FIXTURES = path.join(import.meta.dirname, "fixtures", "gguf");
const CONVERTED_F32 = path.join(GGUF_FIXTURES, "llama-tiny-f32.gguf");
const CONVERTED_Q8 = path.join(GGUF_FIXTURES, "llama-tiny-q8_0.gguf");
const HF = path.join(FIXTURES, "llama-tiny");
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-gguf-load-"));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

const TEXTS = [
  "Permission is hereby granted, free of charge, to any person obtaining a copy",
  "Hello world!  It's 2024: naïve café, 12345 ok?\n\nTHE SOFTWARE<|endoftext|> IS PROVIDED",
  " leading space<pad>",
];

/** Relative to the logits' scale, as models-parity does. */
function scaledError(actual: Float32Array, expected: Float32Array): number {
  return maxRelError(actual, expected, Math.max(...expected.map(Math.abs)));
}

test("permuteRows is llama.cpp's LlamaModel.permute and its inverse", () => {
  // 2 heads of 4 rows, 1 column: HF rows [h0: 0 1 | 2 3, h1: 4 5 | 6 7] -> interleaved halves.
  const hf = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual([...permuteRows(hf, [8], 2)], [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual(permuteRows(permuteRows(hf, [8, 1], 2), [8, 1], 2, true), hf);
});

test("a GGUF written by llama.cpp's convert_hf_to_gguf.py: config, and the PyTorch reference logits and loss", async () => {
  const backend = await testBackend();
  const weights = openGgufWeights(CONVERTED_F32, backend);
  const fromGguf = weights.config;
  weights.close();
  const fromHf = loadConfig(HF);
  assert.deepEqual(fromGguf, fromHf);
  const model = loadModel(backend, CONVERTED_F32);
  try {
    const ref = referenceBatch(HF);
    const out = model.run(ref.batch, ref.labels);
    const err = scaledError(out.logits, ref.logits);
    process.stdout.write(`# converted f32 GGUF vs PyTorch: logits ${err.toExponential(2)}, loss ${out.loss} vs ${ref.loss}\n`);
    assert.ok(err < 1e-4, `logits relative error ${err}`);
    assert.ok(Math.abs(out.loss! - ref.loss) / ref.loss < 1e-4);
    // The same weights exactly, so the same logits as the Hugging Face folder, bit for bit.
    const hfModel = loadModel(backend, HF);
    assert.deepEqual(out.logits, hfModel.run(ref.batch).logits);
    hfModel.free();
  } finally {
    model.free();
  }
});

test("a q8_0 GGUF from gguf-py's quantizer: same bytes as ggml's, logits within quantization error", async () => {
  const backend = await testBackend();
  const ours = path.join(TMP, "llama-tiny-q8_0.gguf");
  exportModel({ model: HF, to: "gguf", out: ours, dtype: "q8_0", backend });
  const a = openGguf(CONVERTED_Q8, backend);
  const b = openGguf(ours, backend);
  try {
    for (const [name, info] of a.tensors) {
      assert.equal(b.info(name).ggmlType, info.ggmlType, name);
      assert.deepEqual(b.readRaw(name), a.readRaw(name), `${name} (${info.ggmlType}) bytes`);
    }
  } finally {
    a.close();
    b.close();
  }
  const ref = referenceBatch(HF);
  for (const weightDtype of ["f32", "q8_0"] as const) {
    const model = loadModel(backend, CONVERTED_Q8, { weightDtype });
    const err = scaledError(model.run(ref.batch).logits, ref.logits);
    process.stdout.write(`# converted q8_0 GGUF (held as ${weightDtype}) vs PyTorch f32: ${err.toExponential(2)}\n`);
    assert.ok(err < 3e-2, `${weightDtype}: ${err}`);
    model.free();
  }
});

test("the GGUF's tokenizer metadata becomes the same tokenizer as tokenizer.json", async () => {
  const backend = await testBackend();
  const hf = Tokenizer.load(HF);
  const ours = path.join(TMP, "llama-tiny-tok.gguf");
  exportModel({ model: HF, to: "gguf", out: ours, dtype: "f16", backend });
  assert.deepEqual(loadTokenizerFor(HF, backend).encode(TEXTS[1]!), hf.encode(TEXTS[1]!));
  for (const file of [CONVERTED_F32, ours]) {
    const tok = file === ours ? loadTokenizerFor(file, backend) : loadGgufTokenizer(file, backend);
    assert.equal(tok.vocabSize, hf.vocabSize);
    assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [0, 0, 1]);
    for (const text of TEXTS) {
      const ids = tok.encode(text);
      assert.deepEqual(ids, hf.encode(text), `${path.basename(file)}: ${JSON.stringify(text)}`);
      assert.equal(tok.decode(ids), hf.decode(ids));
    }
  }
});

test("export -> load round trips exactly (Llama f32, GPT-2 f32) and to within f16 rounding", async () => {
  const backend = await testBackend();
  for (const [name, dir] of [["review-llama", path.join(import.meta.dirname, "..", "models", "review-llama")], ["gpt2-tiny", path.join(FIXTURES, "gpt2-tiny")], ["llama-tiny", HF]] as const) {
    const original = loadModel(backend, dir);
    const batch = { batchSize: 1, seqLen: 12, inputIds: Int32Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % 500) };
    const expected = original.run(batch).logits;
    for (const dtype of ["f32", "f16"] as const) {
      const out = path.join(TMP, `${name}-${dtype}.gguf`);
      exportModel({ model: dir, to: "gguf", out, dtype, backend });
      const loaded = loadModel(backend, out);
      const logits = loaded.run(batch).logits;
      if (dtype === "f32") assert.deepEqual(logits, expected, `${name} f32`);
      else assert.ok(scaledError(logits, expected) < 5e-3, `${name} f16: ${scaledError(logits, expected)}`);
      // Every parameter comes back (f32: bit for bit).
      if (dtype === "f32") for (const p of original.parameterNames) assert.deepEqual(loaded.param(p).getF32(), original.param(p).getF32(), p);
      loaded.free();
    }
    original.free();
  }
});

test("a GGUF model trains: a LoRA run on the converted file gives the Hugging Face folder's losses", async () => {
  const backend = await testBackend();
  const B = 2;
  const S = 16;
  const data = copyTask(B, S);

  const run = (source: string) => {
    const model = loadModel(backend, source);
    const adapter = new LoraAdapter(model, loraConfig({ r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj", "down_proj"] }), { seed: 3 });
    const trainer = new Trainer(model, adapter.stateDict.map(([name, tensor]) => ({ name, tensor })),
      { ...TRAIN_DEFAULTS, steps: 8, batchSize: B, seqLen: S, lr: 1e-2, warmup: 2 }, adapter);
    const losses: number[] = [];
    try {
      trainer.run(data, undefined, [], { onStep: (r) => losses.push(r.loss) });
    } finally {
      trainer.free();
      adapter.free();
      model.free();
    }
    return losses;
  };
  const hf = run(HF);
  assert.ok(hf.at(-1)! < hf[0]! - 0.1, `loss falls: ${hf.map((l) => l.toFixed(3)).join(" ")}`);
  assert.deepEqual(run(CONVERTED_F32), hf);
});

test("GGUF -> Hugging Face folder: config.json, tokenizer and weights load back to the same logits", async () => {
  const backend = await testBackend();
  const out = path.join(TMP, "from-gguf");
  exportModel({ model: CONVERTED_F32, to: "safetensors", out, backend, maxShardBytes: 200_000 });
  assert.ok(fs.existsSync(path.join(out, "model.safetensors.index.json")), "sharded");
  assert.deepEqual(loadConfig(out), loadConfig(HF));
  const tok = Tokenizer.load(out);
  const hfTok = Tokenizer.load(HF);
  for (const text of TEXTS) assert.deepEqual(tok.encode(text), hfTok.encode(text));
  const ref = referenceBatch(HF);
  const a = loadModel(backend, out);
  const b = loadModel(backend, HF);
  assert.deepEqual(a.run(ref.batch).logits, b.run(ref.batch).logits);
  a.free();
  b.free();
});

test("a GGUF that is not a loadable model says why", async () => {
  const backend = await testBackend();
  const lora = path.join(TMP, "lora.gguf");
  exportModel({ model: HF, adapter: path.join(FIXTURES, "llama-tiny-lora-copy"), to: "gguf", out: lora, backend });
  assert.throws(() => loadModel(backend, lora), /lora\.gguf: is an adapter \(general\.type = adapter\), not a model/);
  const file = openGguf(CONVERTED_F32, backend);
  const metadata = new Map(file.metadata);
  metadata.set("general.architecture", { type: "string", value: "falcon" });
  assert.throws(() => configFromGguf({ ...file, path: file.path, metadata, tensors: file.tensors, readF32: (n) => file.readF32(n) }),
    /llama\.cpp architecture "falcon" is not supported/);
  file.close();
});
