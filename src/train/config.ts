// The training config (YAML), validated with zod: unknown keys and wrong types are errors that
// name the key. `--set a.b=value` overrides apply before validation.
import path from "node:path";
import { z } from "zod";
import { FormatError } from "../io/errors.ts";
import { readYamlFile } from "../io/files.ts";
import { applyOverride } from "../io/overrides.ts";

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

/** One task of a multi-task run: its data, and how it is mixed (see src/data/mixture.ts). */
const taskDataSchema = z.strictObject({
  name: z.string().regex(/^[\w.-]+$/, "use letters, digits, '_', '.' and '-' (it names metrics)"),
  train: z.string(),
  eval: z.string().optional(),
  eval_fraction: z.number().gt(0).lt(1).optional(),
  /** Relative rate under mixing "weights". */
  weight: z.number().positive().default(1),
  /** Counts the task as at most this many examples under "proportional" and "temperature" mixing (T5's limit K). */
  cap: positiveInt.optional(),
});

const dataSchema = z.strictObject({
  /** One training file; or `tasks` for several. */
  train: z.string().optional(),
  /** A held-out file, or a fraction of train held out with the run's seed. */
  eval: z.string().optional(),
  eval_fraction: z.number().gt(0).lt(1).optional(),
  tasks: z.array(taskDataSchema).min(1).optional(),
  mixing: z.enum(["proportional", "temperature", "equal", "weights"]).default("proportional"),
  /** T of temperature mixing: rate ∝ size^(1/T). */
  temperature: z.number().positive().default(2),
  mode: z.enum(["pad", "pack"]).default("pad"),
});

/** How the training loss averages (src/engine/compose.ts crossEntropy). */
const lossSchema = z.strictObject({
  balance: z.enum(["token", "sample", "task"]).default("token"),
  /** > 0: MFTCoder's focal-style down-weighting of tasks the model already fits. */
  focal_gamma: z.number().nonnegative().default(0),
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
  /**
   * `random`: fresh weights (transformers' initialisation, seeded by train.seed) in the shape of the
   * model folder's config.json, with its tokenizer: pretraining from scratch, full method only.
   */
  init: z.enum(["pretrained", "random"]).default("pretrained"),
  method: z.enum(["full", "lora", "dora"]),
  lora: loraSchema.default(() => loraSchema.parse({})),
  /** Storage type of the frozen base weights under LoRA: f16/bf16 halve memory, q8_0/q4_0/q4_k quantize ("QLoRA"). */
  base_dtype: z.enum(["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"]).default("f32"),
  data: dataSchema,
  loss: lossSchema.default(() => lossSchema.parse({})),
  train: trainSchema,
  eval: evalSchema.optional(),
  /** Evaluation tasks (names in data/tasks or task YAML files) scored before and after training, and at eval steps. */
  eval_tasks: z.array(z.string()).optional(),
  /** Items per evaluation task. */
  eval_limit: positiveInt.optional(),
  output_dir: z.string(),
  device: z.enum(["cpu", "cuda", "vulkan", "auto"]).default("cpu"),
  threads: positiveInt.optional(),
});

export type TrainConfig = z.infer<typeof trainConfigSchema>;

/** Reads, overrides and validates a config; relative paths resolve against the config's folder. */
export function loadTrainConfig(file: string, overrides: string[] = []): TrainConfig {
  const raw = readYamlFile(file);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FormatError(file, "expected a mapping of config keys");
  for (const override of overrides) applyOverride(raw as Record<string, unknown>, override);
  return parseTrainConfig(raw, file, path.dirname(path.resolve(file)));
}

/** Validates a config mapping; errors name `file`, and relative paths resolve against `baseDir`. */
export function parseTrainConfig(raw: unknown, file: string, baseDir: string): TrainConfig {
  const parsed = trainConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new FormatError(file, parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
  }
  const config = parsed.data;
  const resolve = (p: string) => path.resolve(baseDir, p);
  const problems = dataProblems(config);
  if (problems.length) throw new FormatError(file, problems.join("; "));
  const { data } = config;
  return {
    ...config,
    model: resolve(config.model),
    output_dir: resolve(config.output_dir),
    data: {
      ...data,
      train: data.train && resolve(data.train),
      eval: data.eval && resolve(data.eval),
      tasks: data.tasks?.map((t) => ({ ...t, train: resolve(t.train), eval: t.eval && resolve(t.eval) })),
    },
    eval: config.eval && { ...config.eval, file: resolve(config.eval.file) },
    eval_tasks: config.eval_tasks?.map((t) => (/\.ya?ml$/.test(t) ? resolve(t) : t)),
  };
}

export type TrainingTask = z.infer<typeof taskDataSchema>;

/** The run's tasks: `data.tasks`, or the single `data.train` file as one task named after it. */
export function trainingTasks(config: TrainConfig): TrainingTask[] {
  const problems = dataProblems(config);
  if (problems.length) throw new Error(`training config: ${problems.join("; ")}`);
  const { data } = config;
  if (data.tasks) return data.tasks;
  return [{ name: path.basename(data.train!).replace(/\.[^.]+$/, ""), train: data.train!, eval: data.eval, eval_fraction: data.eval_fraction, weight: 1 }];
}

function dataProblems(config: TrainConfig): string[] {
  const { data } = config;
  const problems: string[] = [];
  if (config.method === "full" && config.base_dtype !== "f32") problems.push("base_dtype: full fine-tuning trains the weights themselves, which must be f32");
  if (config.init === "random" && config.method !== "full") problems.push("init: random weights are trained with method full");
  if (!data.train === !data.tasks) problems.push("data: give train (one file) or tasks (a list), not both or neither");
  if (data.tasks && (data.eval || data.eval_fraction)) problems.push("data: with tasks, give eval or eval_fraction per task");
  for (const [where, d] of [["data", data] as const, ...(data.tasks ?? []).map((t, i) => [`data.tasks.${i}`, t] as const)]) {
    if (d.eval && d.eval_fraction) problems.push(`${where}: give eval or eval_fraction, not both`);
  }
  const names = (data.tasks ?? []).map((t) => t.name);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated) problems.push(`data.tasks: task name "${repeated}" appears twice`);
  return problems;
}
