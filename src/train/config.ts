// The training config (YAML), validated with zod: unknown keys and wrong types are errors that
// name the key. `--set a.b=value` overrides apply before validation.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { z } from "zod";
import { FormatError } from "../io/errors.ts";

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

const loraSchema = z.strictObject({
  r: positiveInt.default(8),
  alpha: z.number().default(16),
  dropout: z.number().min(0).lt(1).default(0.05),
  target_modules: z.union([z.array(z.string()).min(1), z.string()]).default(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
  use_rslora: z.boolean().default(false),
  layers_to_transform: z.array(nonNegativeInt).optional(),
  init_lora_weights: z.union([z.boolean(), z.literal("gaussian")]).default(true),
  /** Modules trained fully and saved with the adapter (e.g. a classifier head). */
  modules_to_save: z.array(z.string()).optional(),
  bias: z.enum(["none", "all", "lora_only"]).default("none"),
});

const dataSchema = z.strictObject({
  train: z.string(),
  /** A held-out file, or a fraction of train held out with the run's seed. */
  eval: z.string().optional(),
  eval_fraction: z.number().gt(0).lt(1).optional(),
  mode: z.enum(["pad", "pack"]).default("pad"),
});

const trainSchema = z.strictObject({
  steps: positiveInt,
  batch_size: positiveInt.default(8),
  grad_accum: positiveInt.default(1),
  seq_len: positiveInt.default(128),
  lr: z.number().positive(),
  warmup: nonNegativeInt.default(0),
  schedule: z.enum(["constant", "linear", "cosine"]).default("linear"),
  weight_decay: z.number().nonnegative().default(0),
  max_grad_norm: z.number().nonnegative().default(1),
  seed: z.number().int().default(42),
  eval_every: nonNegativeInt.default(0),
  save_every: nonNegativeInt.default(0),
  eval_batches: positiveInt.default(8),
});

/** A multiple-choice task scored before and after training (choices are continuations). */
const evalSchema = z.strictObject({
  /** JSONL of prompt/completion rows; the completion must be one of the choices. */
  file: z.string(),
  choices: z.array(z.string()).min(2),
  limit: positiveInt.optional(),
});

export const trainConfigSchema = z.strictObject({
  model: z.string(),
  method: z.enum(["full", "lora", "dora"]),
  lora: loraSchema.default(() => loraSchema.parse({})),
  /** Storage type of the frozen base weights under LoRA: f16/bf16 halve memory, q8_0/q4_0/q4_k quantize ("QLoRA"). */
  base_dtype: z.enum(["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"]).default("f32"),
  data: dataSchema,
  train: trainSchema,
  eval: evalSchema.optional(),
  output_dir: z.string(),
  device: z.enum(["cpu", "cuda", "vulkan", "auto"]).default("cpu"),
  threads: positiveInt.optional(),
});

export type TrainConfig = z.infer<typeof trainConfigSchema>;

/** Reads, overrides and validates a config; relative paths resolve against the config's folder. */
export function loadTrainConfig(file: string, overrides: string[] = []): TrainConfig {
  let raw: unknown;
  try {
    raw = YAML.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new FormatError(file, (err as NodeJS.ErrnoException).code === "ENOENT" ? "not found" : `invalid YAML: ${(err as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FormatError(file, "expected a mapping of config keys");
  for (const override of overrides) applyOverride(raw as Record<string, unknown>, override);
  const parsed = trainConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new FormatError(file, parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
  }
  const config = parsed.data;
  const base = path.dirname(path.resolve(file));
  const resolve = (p: string) => path.resolve(base, p);
  if (config.method === "full" && config.base_dtype !== "f32") throw new FormatError(file, "base_dtype: full fine-tuning trains the weights themselves, which must be f32");
  if (config.data.eval && config.data.eval_fraction) throw new FormatError(file, "data: give eval or eval_fraction, not both");
  return {
    ...config,
    model: resolve(config.model),
    output_dir: resolve(config.output_dir),
    data: { ...config.data, train: resolve(config.data.train), eval: config.data.eval && resolve(config.data.eval) },
    eval: config.eval && { ...config.eval, file: resolve(config.eval.file) },
  };
}

/** `a.b.c=value`, value parsed as YAML (so numbers, booleans and lists keep their types). */
function applyOverride(target: Record<string, unknown>, override: string): void {
  const eq = override.indexOf("=");
  if (eq <= 0) throw new Error(`--set expects key=value, got "${override}"`);
  const keys = override.slice(0, eq).split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]] = YAML.parse(override.slice(eq + 1));
}
