// Recipe for models/review-llama, the demo's base model: a small Llama trained from scratch on
// the review sentences of data/sst2/train.jsonl (their text only, no labels) with the bundled
// byte-level BPE tokenizer, so that sentiment fine-tuning starts from a model that reads reviews.
// Usage: npx tsx scripts/pretrain-demo-model.ts [steps] [out-dir]
import fs from "node:fs";
import path from "node:path";
import { Backend } from "../src/engine/backend.ts";
import { BatchSchedule, batchingTokenIds } from "../src/data/batches.ts";
import { encodeRows } from "../src/data/examples.ts";
import { readRows } from "../src/data/records.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { createModel } from "../src/models/index.ts";
import { Trainer, TRAIN_DEFAULTS } from "../src/train/trainer.ts";

const [stepsArg = "1500", out = "models/review-llama"] = process.argv.slice(2);
const TOKENIZER_DIR = "models/tiny-llama";
const CONFIG = {
  architectures: ["LlamaForCausalLM"], model_type: "llama", vocab_size: 512, hidden_size: 128, intermediate_size: 344,
  num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, hidden_act: "silu",
  max_position_embeddings: 256, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: false,
  attention_bias: false, mlp_bias: false, bos_token_id: 0, eos_token_id: 0, pad_token_id: 1, torch_dtype: "float32",
};

const tokenizer = Tokenizer.load(TOKENIZER_DIR);
const reviews = readRows("data/sst2/train.jsonl").map(({ line, values }) => ({
  line, values: { text: String(values.prompt).replace(/^Review: /, "").replace(/\nSentiment:$/, "") },
}));
const { examples } = encodeRows("data/sst2/train.jsonl", reviews, tokenizer);
const backend = await Backend.open({ device: "cpu" });
const model = createModel(backend, parseConfig(CONFIG, "review-llama config"));
model.initialize(0);
const seqLen = 128;
const batchSize = 16;
const steps = Number(stepsArg);
const schedule = new BatchSchedule(examples, { batchSize, seqLen, mode: "pack", seed: 0, ...batchingTokenIds(tokenizer) });
const params = model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
const trainer = new Trainer(model, params, {
  ...TRAIN_DEFAULTS, steps, batchSize, seqLen, lr: 3e-3, warmup: 50, schedule: "cosine", weightDecay: 0.01, seed: 0,
});
trainer.run(schedule, undefined, [], {
  onStep: (r) => {
    if (r.step % 50 === 0 || r.step === 1) process.stdout.write(`step ${r.step}/${steps} loss ${r.loss.toFixed(3)} ${Math.round(r.tokens_per_s)} tok/s\n`);
  },
});
fs.mkdirSync(out, { recursive: true });
writeSafetensors(path.join(out, "model.safetensors"), model.parameterNames.map((name) => {
  const t = model.param(name);
  return { name, dtype: "F32" as const, shape: t.torchShape, data: t.getF32() };
}), { format: "pt" });
fs.writeFileSync(path.join(out, "config.json"), `${JSON.stringify(CONFIG, null, 2)}\n`);
for (const file of ["tokenizer.json", "tokenizer_config.json"]) fs.copyFileSync(path.join(TOKENIZER_DIR, file), path.join(out, file));
process.stdout.write(`wrote ${out} (${model.parameterCount} parameters, ${steps} steps over ${schedule.rowsPerEpoch.toFixed(0)} rows per epoch)\n`);
