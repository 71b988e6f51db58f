// An adapter tasktune saves has PEFT's exact layout, reloads here to identical logits, and loads in
// Python PEFT to the same logits (checked when torch and peft are installed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { loadAdapter, saveAdapter } from "../src/adapters/peft-io.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { loadModel } from "../src/models/index.ts";
import { testBackend } from "./support/backend.ts";
import { FIXTURES, referenceBatch } from "./support/fixtures.ts";
import { maxRelError } from "./support/gradcheck.ts";

const BASE = path.join(FIXTURES, "llama-tiny");
const hasPeft = spawnSync("python3", ["-c", "import torch, peft, transformers"]).status === 0;

for (const useDora of [false, true]) {
  test(`${useDora ? "DoRA" : "LoRA"} adapter: PEFT key names and config, reload to identical logits${hasPeft ? ", same logits in Python PEFT" : ""}`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-adapter-"));
    const { batch } = referenceBatch(BASE);
    const model = loadModel(await testBackend(), BASE);
    // init_lora_weights: false gives a non-zero B, so the adapter changes the logits.
    const adapter = new LoraAdapter(model, loraConfig({ r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj", "down_proj"], useDora, initLoraWeights: false }), { seed: 5 });
    const ours = model.run(batch).logits;
    saveAdapter(adapter, dir);
    adapter.free();
    const reloaded = loadAdapter(model, dir);
    assert.deepEqual(model.run(batch).logits, ours);
    reloaded.free();
    model.free();

    const fixture = openSafetensors(path.join(FIXTURES, useDora ? "llama-tiny-dora-copy" : "llama-tiny-lora-copy", "adapter_model.safetensors"));
    const saved = openSafetensors(path.join(dir, "adapter_model.safetensors"));
    const layer0 = (names: Iterable<string>) => [...names].filter((n) => n.includes("layers.0.") && /q_proj|v_proj/.test(n)).sort();
    assert.deepEqual(layer0(saved.tensors.keys()), layer0(fixture.tensors.keys()), "the same key names PEFT writes");
    fixture.close();
    saved.close();
    const config = JSON.parse(fs.readFileSync(path.join(dir, "adapter_config.json"), "utf8"));
    assert.equal(config.peft_type, "LORA");
    assert.equal(config.use_dora, useDora);

    if (hasPeft) {
      const out = path.join(dir, "peft-logits.safetensors");
      const run = spawnSync("python3", [path.join(import.meta.dirname, "support", "peft_logits.py"), BASE, dir, path.join(BASE, "reference.safetensors"), out], { encoding: "utf8" });
      assert.equal(run.status, 0, run.stderr);
      const peft = openSafetensors(out).readF32("logits");
      const err = maxRelError(ours, peft, Math.max(...peft.map(Math.abs)));
      assert.ok(err < 1e-4, `PEFT logits differ: ${err}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

test(`BERT adapter with modules_to_save and bias: PEFT keys${hasPeft ? ", and Python PEFT loads it to the same logits" : ""}`, async () => {
  const base = path.join(FIXTURES, "bert-tiny");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-adapter-"));
  const { batch } = referenceBatch(base);
  const model = loadModel(await testBackend(), base);
  const adapter = new LoraAdapter(model, loraConfig({
    r: 2, loraAlpha: 4, targetModules: ["query", "value"], modulesToSave: ["classifier"], bias: "lora_only", initLoraWeights: false, taskType: "SEQ_CLS",
  }), { seed: 2 });
  // Perturb the trained base tensors so that saving them matters.
  for (const [, t] of adapter.baseTensors) t.setAll(t.getF32().map((v, i) => v + 0.01 * Math.sin(i)));
  const ours = model.run(batch).logits;
  saveAdapter(adapter, dir);
  const keys = [...openSafetensors(path.join(dir, "adapter_model.safetensors")).tensors.keys()];
  assert.ok(keys.includes("base_model.model.classifier.weight") && keys.includes("base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.bias"));
  adapter.free();
  model.free();
  if (hasPeft) {
    const out = path.join(dir, "peft-logits.safetensors");
    const run = spawnSync("python3", [path.join(import.meta.dirname, "support", "peft_logits.py"), base, dir, path.join(base, "reference.safetensors"), out, "seq-cls"], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    const peft = openSafetensors(out).readF32("logits");
    assert.ok(maxRelError(ours, peft, Math.max(...peft.map(Math.abs))) < 1e-4, `PEFT logits differ: ${[...peft]} vs ${[...ours]}`);
  }
});

test("adapter mismatches are errors that list the offending keys", async () => {
  const source = path.join(FIXTURES, "llama-tiny-lora-copy");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-adapter-"));
  fs.copyFileSync(path.join(source, "adapter_model.safetensors"), path.join(dir, "adapter_model.safetensors"));
  const config = JSON.parse(fs.readFileSync(path.join(source, "adapter_config.json"), "utf8"));
  const model = loadModel(await testBackend(), BASE);
  try {
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ ...config, r: 8 }));
    assert.throws(() => loadAdapter(model, dir), /shape mismatches .*layers\.0\.mlp\.down_proj\.lora_A\.weight is \[4, 172\], expected \[8, 172\]/s);
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ ...config, target_modules: ["q_proj"] }));
    assert.throws(() => loadAdapter(model, dir), /unexpected keys .*layers\.0\.mlp\.down_proj\.lora_A\.weight/s);
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ ...config, target_modules: ["q_proj", "lm_head"] }));
    assert.throws(() => loadAdapter(model, dir), /missing keys .*base_model\.model\.lm_head\.lora_A\.weight/s);
    const gpt2 = loadModel(await testBackend(), path.join(FIXTURES, "gpt2-tiny"));
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify(config));
    assert.throws(() => loadAdapter(gpt2, dir), /target_modules .* match no module of this gpt2 model/);
    gpt2.free();
  } finally {
    model.free();
  }
});
