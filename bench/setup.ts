// The model, adapter, trainer and random-token batches of one bench configuration, shared by the
// timing (tasktune-step.ts) and profiling (profile-step.ts) scripts.
import { LoraAdapter } from "../src/adapters/lora.ts";
import { loraConfig } from "../src/adapters/peft-config.ts";
import { Backend } from "../src/engine/backend.ts";
import { seededUniform } from "../src/engine/random.ts";
import { parseConfig } from "../src/io/hf-config.ts";
import { createModel } from "../src/models/index.ts";
import { Trainer, TRAIN_DEFAULTS, type BatchSource } from "../src/train/trainer.ts";
import { BENCH_CONFIGS, type BenchConfig } from "./configs.ts";

export function benchConfig(name: string | undefined): BenchConfig {
  const config = BENCH_CONFIGS.find((c) => c.name === name);
  if (!config) throw new Error(`unknown bench config ${name} (one of ${BENCH_CONFIGS.map((c) => c.name).join(", ")})`);
  return config;
}

/**
 * A freshly initialised model of the configuration, its trainer over `steps`, and batches of random
 * tokens (batch i fixed by i). GPU models keep zero weights: a step's time does not depend on the
 * values, and drawing a billion of them in JavaScript would take minutes.
 */
export async function benchTrainer(config: BenchConfig, steps: number, threads = config.threads) {
  const { batchSize: B, seqLen: S } = config;
  const backend = await Backend.open({ device: config.device ?? "cpu", threads });
  const model = createModel(backend, parseConfig({
    model_type: "llama", hidden_act: "silu", rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 2048, ...config.model,
  }, config.name), config.weightDtype ?? "f32");
  if (!config.device) model.initialize(0);
  const adapter = config.method === "lora" ? new LoraAdapter(model, loraConfig({
    r: config.loraRank!, loraAlpha: 2 * config.loraRank!, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
  }), { seed: 0 }) : undefined;
  const params = adapter ? adapter.stateDict.map(([name, tensor]) => ({ name, tensor })) : model.parameterNames.map((name) => ({ name, tensor: model.param(name) }));
  const data: BatchSource = {
    batchAt(i) {
      const random = seededUniform(i);
      const ids = Int32Array.from({ length: B * S }, () => Math.floor(random() * config.model.vocab_size));
      return { batch: { batchSize: B, seqLen: S, inputIds: ids }, labels: ids, tokens: B * S };
    },
  };
  const trainer = new Trainer(model, params, { ...TRAIN_DEFAULTS, steps, batchSize: B, seqLen: S, lr: 1e-4 }, adapter);
  return { backend, model, adapter, params, data, trainer };
}
