// Interop with the real client: models and LoRA adapters that `tasktune export` writes, loaded by
// llama.cpp itself (node-llama-cpp 3.21.1, the same llama.cpp release as our ggml), give the same
// next-token distributions at every position and the same greedy continuation as tasktune's own
// forward pass. node-llama-cpp loads the very same ggml libraries into this process, which works:
// both sides run here, on the CPU, with an f32 KV cache so that f32 files can agree to ~1e-6.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { loadAdapter, saveAdapter } from "../src/adapters/peft-io.ts";
import { seededNormal } from "../src/engine/random.ts";
import { exportModel } from "../src/export/index.ts";
import { openGguf } from "../src/io/gguf.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { openCheckpoint, writeSafetensors } from "../src/io/safetensors.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { createModel, loadModel } from "../src/models/index.ts";
import type { Model } from "../src/models/model.ts";
import { testBackend as sharedBackend } from "./support/backend.ts";
import { FIXTURES } from "./support/fixtures.ts";

const ROOT = path.join(import.meta.dirname, "..");
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-export-llamacpp-"));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

const TEXT = "Permission is hereby granted, free of charge, to any person obtaining a copy";
const CONTINUE = 8;

// llama.cpp in this process uses the same ggml registry, so a loaded BLAS backend would serve its
// tiny test models too (several times slower there); these tests are about the files.
const testBackend = () => sharedBackend({ blas: false });

let llamaPromise: Promise<Llama> | undefined;
const llama = () => (llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error }));
after(async () => {
  if (llamaPromise) await (await llamaPromise).dispose();
});

interface Run {
  /** log-softmax of the logits, [positions, vocab] */
  logProbs: Float32Array[];
  continuation: number[];
}

/** llama.cpp's next-token distribution after every prompt token, and its greedy continuation. */
async function llamaCppRun(modelPath: string, tokens: number[], lora?: { filePath: string; scale?: number }, texts: string[] = []): Promise<Run & { tokenized: number[][] }> {
  const l = await llama();
  const model = await l.loadModel({ modelPath });
  try {
    const context = await model.createContext({
      contextSize: 128, batchSize: 128, threads: 2, flashAttention: false,
      experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
      ...(lora ? { lora: { adapters: [{ filePath: lora.filePath, scale: lora.scale ?? 1 }] } } : {}),
    });
    try {
      const sequence = context.getSequence();
      const out = await sequence.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }] as [number, { generateNext: { probabilities: true } }]) as never);
      const logProbs = out.map((o, i) => {
        const probs = o?.next?.probabilities;
        if (!probs) throw new Error(`no probabilities at position ${i}`);
        // Greedy sampling keeps every candidate: the map holds the whole vocabulary.
        const row = new Float32Array(probs.size);
        for (const [id, p] of probs) row[id as number] = Math.log(p);
        return row;
      });
      await sequence.clearHistory();
      const continuation: number[] = [];
      for await (const token of sequence.evaluate(tokens as never, { temperature: 0, yieldEogToken: true })) {
        continuation.push(token as number);
        if (continuation.length === CONTINUE) break;
      }
      const tokenized = texts.map((text) => [...model.tokenize(text, false)].map(Number));
      return { logProbs, continuation, tokenized };
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

function logSoftmax(logits: Float32Array, offset: number, n: number): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[offset + i]! - max);
  const lse = max + Math.log(sum);
  return Float32Array.from({ length: n }, (_, i) => logits[offset + i]! - lse);
}

/** Our distribution after every token, and greedy decoding by re-running the whole sequence. */
function tasktuneRun(model: Model, tokens: number[]): Run {
  const vocab = model.config.vocabSize;
  const forward = (ids: number[]) => model.run({ batchSize: 1, seqLen: ids.length, inputIds: Int32Array.from(ids) }).logits;
  const logits = forward(tokens);
  const logProbs = tokens.map((_, t) => logSoftmax(logits, t * vocab, vocab));
  const ids = [...tokens];
  const continuation: number[] = [];
  for (let i = 0; i < CONTINUE; i++) {
    const all = i === 0 ? logits : forward(ids);
    const last = all.subarray((ids.length - 1) * vocab, ids.length * vocab);
    const next = last.indexOf(Math.max(...last));
    continuation.push(next);
    ids.push(next);
  }
  return { logProbs, continuation };
}

/** Max over positions and tokens of |a - b| / max(1, |b|): log-probabilities, so relative where large. */
function compare(a: Run, b: Run): { maxError: number; argmaxAgree: boolean } {
  let maxError = 0;
  let argmaxAgree = true;
  a.logProbs.forEach((row, t) => {
    const ref = b.logProbs[t]!;
    assert.equal(row.length, ref.length);
    for (let i = 0; i < row.length; i++) maxError = Math.max(maxError, Math.abs(row[i]! - ref[i]!) / Math.max(1, Math.abs(ref[i]!)));
    if (row.indexOf(Math.max(...row)) !== ref.indexOf(Math.max(...ref))) argmaxAgree = false;
  });
  return { maxError, argmaxAgree };
}

/** Measured numbers, printed so that the test log records them. */
function report(label: string, r: { maxError: number }) {
  process.stdout.write(`# ${label}: max relative log-prob difference ${r.maxError.toExponential(2)}\n`);
}

for (const [label, dir] of [["models/tiny-llama", path.join(ROOT, "models", "tiny-llama")], ["models/review-llama", path.join(ROOT, "models", "review-llama")]] as const) {
  test(`${label} exported to GGUF f32: llama.cpp tokenizes, predicts and continues as tasktune does`, async () => {
    const backend = await testBackend();
    const out = path.join(TMP, `${path.basename(dir)}-f32.gguf`);
    exportModel({ model: dir, to: "gguf", out, backend });
    const tokenizer = Tokenizer.load(dir);
    const tokens = tokenizer.encode(TEXT);
    const model = loadModel(backend, dir);
    try {
      const ours = tasktuneRun(model, tokens);
      const texts = [TEXT, "Hello world!  It's 2024: naïve café, 12345 ok?\n\nTHE SOFTWARE IS PROVIDED \"AS IS\"", " leading space", "tabs\tand\nnewlines\n  x"];
      const theirs = await llamaCppRun(out, tokens, undefined, texts);
      // tokenizer.ggml.pre "gpt-2" reproduces the ByteLevel pre-tokenizer of tokenizer.json
      texts.forEach((text, i) => assert.deepEqual(theirs.tokenized[i], tokenizer.encode(text), `llama.cpp tokenizes ${JSON.stringify(text)} differently`));
      const r = compare(theirs, ours);
      report(`${label} f32`, r);
      assert.ok(r.maxError < 1e-4, `log-probs differ by ${r.maxError}`);
      assert.ok(r.argmaxAgree);
      assert.deepEqual(theirs.continuation, ours.continuation, "greedy continuation");
    } finally {
      model.free();
    }
  });
}

test("quantized GGUF (q8_0, f16): llama.cpp and tasktune agree on the same quantized file", async () => {
  const backend = await testBackend();
  const dir = path.join(ROOT, "models", "review-llama");
  const tokens = Tokenizer.load(dir).encode(TEXT);
  const reference = loadModel(backend, dir);
  const f32 = tasktuneRun(reference, tokens);
  reference.free();
  for (const dtype of ["f16", "q8_0"] as const) {
    const out = path.join(TMP, `review-llama-${dtype}.gguf`);
    exportModel({ model: dir, to: "gguf", out, dtype, backend });
    // Our model on the GGUF's own (dequantised, then re-stored in the same type) weights.
    const model = loadModel(backend, out, { weightDtype: dtype });
    try {
      const ours = tasktuneRun(model, tokens);
      const theirs = await llamaCppRun(out, tokens);
      const same = compare(theirs, ours);
      const vsF32 = compare(theirs, f32);
      report(`review-llama ${dtype}: llama.cpp vs tasktune on the ${dtype} file`, same);
      report(`review-llama ${dtype}: llama.cpp ${dtype} vs tasktune f32`, vsF32);
      // llama.cpp quantizes activations to q8 (q8_0 weights) or f16 in its matmuls, where tasktune's graph stays in f32.
      assert.ok(same.maxError < 2e-2, `${dtype}: ${same.maxError}`);
      assert.ok(vsF32.maxError < 5e-2, `${dtype} vs f32: ${vsF32.maxError}`);
    } finally {
      model.free();
    }
  }
});

for (const name of ["llama-tiny-lora-copy", "llama-tiny-rslora-copy"]) {
  test(`${name} as a GGUF LoRA: llama.cpp with --lora matches tasktune with the PEFT adapter`, async () => {
    const backend = await testBackend();
    const base = path.join(FIXTURES, "llama-tiny");
    const adapterDir = path.join(FIXTURES, name);
    const baseGguf = path.join(TMP, "llama-tiny-f32.gguf");
    if (!fs.existsSync(baseGguf)) exportModel({ model: base, to: "gguf", out: baseGguf, backend });
    const loraGguf = path.join(TMP, `${name}.gguf`);
    exportModel({ model: base, adapter: adapterDir, to: "gguf", out: loraGguf, backend });
    const tokens = Tokenizer.load(base).encode(TEXT);
    const model = loadModel(backend, base);
    try {
      const plain = tasktuneRun(model, tokens);
      const adapter = loadAdapter(model, adapterDir);
      const ours = tasktuneRun(model, tokens);
      adapter.free();
      const theirs = await llamaCppRun(baseGguf, tokens, { filePath: loraGguf });
      const r = compare(theirs, ours);
      report(`${name} GGUF LoRA`, r);
      assert.ok(compare(plain, ours).maxError > 1e-2, "the adapter changes the predictions");
      assert.ok(r.maxError < 1e-4, `log-probs differ by ${r.maxError}`);
      assert.deepEqual(theirs.continuation, ours.continuation, "greedy continuation");
    } finally {
      model.free();
    }
  });
}

test("a merged model (--adapter --merge) in llama.cpp equals the base plus the GGUF LoRA", async () => {
  const backend = await testBackend();
  const base = path.join(FIXTURES, "llama-tiny");
  const adapterDir = path.join(FIXTURES, "llama-tiny-lora-reverse");
  const merged = path.join(TMP, "llama-tiny-reverse-merged.gguf");
  exportModel({ model: base, adapter: adapterDir, merge: true, to: "gguf", out: merged, backend });
  const tokens = Tokenizer.load(base).encode(TEXT);
  const model = loadModel(backend, base);
  try {
    const adapter = loadAdapter(model, adapterDir);
    const ours = tasktuneRun(model, tokens);
    adapter.free();
    const r = compare(await llamaCppRun(merged, tokens), ours);
    report("llama-tiny-lora-reverse merged GGUF", r);
    assert.ok(r.maxError < 1e-4, `log-probs differ by ${r.maxError}`);
  } finally {
    model.free();
  }
});

/** A copy of llama-tiny with an edited config; parameters the original lacks (biases) drawn at random so that they matter. */
async function variantModel(name: string, edit: (config: Record<string, unknown>) => void): Promise<string> {
  const base = path.join(FIXTURES, "llama-tiny");
  const dir = path.join(TMP, name);
  fs.cpSync(base, dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(base, "config.json"), "utf8"));
  edit(config);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  const model = createModel(await testBackend(), parseConfig(config, name));
  const checkpoint = openCheckpoint(base);
  const normal = seededNormal(11);
  const tensors = model.parameterNames.map((n) => {
    const shape = model.param(n).torchShape;
    const size = shape.reduce((a, b) => a * b, 1);
    const same = checkpoint.tensors.has(n) && checkpoint.info(n).shape.join() === shape.join();
    // Fresh tensors: norms near 1, biases large enough to matter, matrices scaled by fan-in.
    const scale = shape.length === 2 ? 1 / Math.sqrt(shape[1]!) : 0.5;
    const data = same ? checkpoint.readF32(n) : Float32Array.from({ length: size }, () => (n.endsWith("norm.weight") ? 1 : 0) + scale * normal());
    return { name: n, dtype: "F32" as const, shape, data };
  });
  checkpoint.close();
  model.free();
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, { format: "pt" });
  return dir;
}

const VARIANTS: [string, (c: Record<string, unknown>) => void][] = [
  ["rope-linear", (c) => { c.rope_parameters = { rope_type: "linear", factor: 2, rope_theta: 10000 }; }],
  ["rope-yarn", (c) => { c.rope_parameters = { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64, rope_theta: 10000 }; }],
  ["rope-llama3", (c) => { c.rope_parameters = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64, rope_theta: 500000 }; }],
  ["rope-llama3-ramp", (c) => { c.rope_parameters = { rope_type: "llama3", factor: 4, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64, rope_theta: 10000 }; }],
  ["attention-bias", (c) => { c.attention_bias = true; c.mlp_bias = true; }],
  ["qwen2", (c) => { c.model_type = "qwen2"; c.architectures = ["Qwen2ForCausalLM"]; c.tie_word_embeddings = true; }],
];

for (const [name, edit] of VARIANTS) {
  test(`${name}: llama.cpp agrees with tasktune, and the GGUF loads back to the same model`, async () => {
    const backend = await testBackend();
    const dir = await variantModel(name, edit);
    const out = path.join(TMP, `${name}.gguf`);
    exportModel({ model: dir, to: "gguf", out, backend });
    const tokens = Tokenizer.load(dir).encode(`${TEXT} of this software and associated documentation files`);
    const model = loadModel(backend, dir);
    const loaded = loadModel(backend, out);
    try {
      const ours = tasktuneRun(model, tokens);
      if (name.startsWith("rope-llama3")) {
        // Read back from rope_freqs.weight: the same per-frequency factors, from ramp bounds that need not be the config's.
        assert.equal(loaded.config.family === "llama" && loaded.config.ropeScaling.type, "llama3");
        assert.ok(compare(tasktuneRun(loaded, tokens), ours).maxError < 1e-6);
      } else {
        assert.deepEqual(loaded.config, model.config, "config read back from the GGUF metadata");
        assert.deepEqual(tasktuneRun(loaded, tokens).logProbs, ours.logProbs);
      }
      const r = compare(await llamaCppRun(out, tokens), ours);
      report(`${name} (${tokens.length} positions)`, r);
      assert.ok(r.maxError < 1e-4, `log-probs differ by ${r.maxError}`);
    } finally {
      model.free();
      loaded.free();
    }
  });
}

test("gpt2-tiny exported to GGUF: llama.cpp's gpt2 agrees with tasktune", async () => {
  const backend = await testBackend();
  const dir = path.join(FIXTURES, "gpt2-tiny");
  const out = path.join(TMP, "gpt2-tiny.gguf");
  exportModel({ model: dir, to: "gguf", out, backend });
  const tokens = Tokenizer.load(dir).encode(TEXT);
  const model = loadModel(backend, dir);
  try {
    const ours = tasktuneRun(model, tokens);
    const theirs = await llamaCppRun(out, tokens);
    const r = compare(theirs, ours);
    report("gpt2-tiny f32", r);
    // ggml's CPU GELU reads a float16 table (GGML_GELU_FP16); tasktune composes GELU from exact ops.
    assert.ok(r.maxError < 2e-3, `log-probs differ by ${r.maxError}`);
    assert.ok(r.argmaxAgree);
  } finally {
    model.free();
  }
});

test("q4_k and q4_0 GGUF of a model with 256-wide rows: llama.cpp and tasktune agree on the same file", async () => {
  const backend = await testBackend();
  const dir = await variantModel("wide", (c) => {
    Object.assign(c, { hidden_size: 256, intermediate_size: 512, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64 });
  });
  const tokens = Tokenizer.load(dir).encode(TEXT);
  const f32Model = loadModel(backend, dir);
  const f32 = tasktuneRun(f32Model, tokens);
  f32Model.free();
  for (const dtype of ["q4_k", "q4_0"] as const) {
    const out = path.join(TMP, `wide-${dtype}.gguf`);
    exportModel({ model: dir, to: "gguf", out, dtype, backend });
    const file = openGguf(out, backend);
    assert.equal(file.info("blk.0.attn_q.weight").ggmlType, dtype);
    assert.equal(file.info("blk.0.ffn_down.weight").ggmlType, dtype);
    file.close();
    const model = loadModel(backend, out, { weightDtype: dtype });
    try {
      const ours = tasktuneRun(model, tokens);
      const r = compare(await llamaCppRun(out, tokens), ours);
      const quantization = compare(ours, f32);
      report(`wide ${dtype}: llama.cpp vs tasktune on the ${dtype} file`, r);
      report(`wide ${dtype}: tasktune ${dtype} vs tasktune f32`, quantization);
      // Both quantize activations in their matmuls (q8_K / q8_0), with different kernels; the
      // weights themselves are the same, so the two agree far better than either agrees with f32.
      assert.ok(r.maxError < 5e-2 && r.maxError < quantization.maxError / 4, `${dtype}: ${r.maxError} (quantization effect ${quantization.maxError})`);
    } finally {
      model.free();
    }
  }
});

test("a GPT-2 LoRA (on Conv1D c_attn, c_fc) as a GGUF LoRA: llama.cpp agrees with tasktune", async () => {
  const backend = await testBackend();
  const dir = path.join(FIXTURES, "gpt2-tiny");
  const baseGguf = path.join(TMP, "gpt2-tiny-base.gguf");
  exportModel({ model: dir, to: "gguf", out: baseGguf, backend });
  const tokens = Tokenizer.load(dir).encode(TEXT);
  const model = loadModel(backend, dir);
  try {
    const adapter = new LoraAdapter(model, loraConfig({ r: 4, loraAlpha: 16, targetModules: ["c_attn", "c_fc"], initLoraWeights: false }), { seed: 2 });
    saveAdapter(adapter, path.join(TMP, "gpt2-lora"));
    const ours = tasktuneRun(model, tokens);
    adapter.free();
    const plain = tasktuneRun(model, tokens);
    const loraGguf = path.join(TMP, "gpt2-lora.gguf");
    exportModel({ model: dir, adapter: path.join(TMP, "gpt2-lora"), to: "gguf", out: loraGguf, backend });
    const r = compare(await llamaCppRun(baseGguf, tokens, { filePath: loraGguf }), ours);
    report("gpt2-tiny GGUF LoRA", r);
    assert.ok(compare(plain, ours).maxError > 1e-2, "the adapter changes the predictions");
    assert.ok(r.maxError < 2e-3, `log-probs differ by ${r.maxError}`);
  } finally {
    model.free();
  }
});
