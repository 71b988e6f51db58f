// Merge configs (YAML). Full-model merges read mergekit's shape (merge_method, base_model,
// models: [{model, parameters}], parameters, dtype, out_dtype, tokenizer_source); adapter merges
// read merge_method (a PEFT combination_type), base_model, adapters: [{adapter, weight}],
// parameters. Unknown keys and wrong types are errors that name the key.
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { FormatError } from "../io/errors.ts";
import { readYamlFile } from "../io/files.ts";
import type { ParameterSetting } from "./params.ts";
import type { FloatDtype } from "./tensor-merge.ts";

const scalar = z.union([z.number(), z.boolean()]);
const gradient = z.array(z.number()).min(1);
const conditional = z.strictObject({ filter: z.string().optional(), value: z.union([scalar, gradient]) });
const setting = z.union([scalar, gradient, z.array(conditional).min(1)]);
const settings = z.record(z.string(), setting).nullish();

const DTYPES: Record<string, FloatDtype> = {
  float32: "F32", fp32: "F32", f32: "F32",
  float16: "F16", fp16: "F16", f16: "F16", half: "F16",
  bfloat16: "BF16", bf16: "BF16",
};
const dtype = z.string().refine((s) => Object.hasOwn(DTYPES, s), { message: `must be one of ${Object.keys(DTYPES).join(", ")}` });

const UNSUPPORTED_KEYS: Record<string, string> = {
  slices: "layer slices (frankenmerges) are not supported; list whole models under models",
  modules: "per-module definitions are not supported; list whole models under models",
  tokenizer: "tokenizer surgery is not supported; the base model's tokenizer is copied",
  chat_template: "is not supported; the chat template of the tokenizer source is copied",
};

export const modelMergeSchema = z.strictObject({
  merge_method: z.string(),
  base_model: z.string().nullish(),
  models: z.array(z.strictObject({ model: z.string(), parameters: settings })).min(1),
  parameters: settings,
  dtype: dtype.nullish(),
  out_dtype: dtype.nullish(),
  tokenizer_source: z.string().nullish(),
});

export const COMBINATION_TYPES = [
  "linear", "cat", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd",
  "magnitude_prune", "magnitude_prune_svd",
] as const;
export type CombinationType = (typeof COMBINATION_TYPES)[number];

export const adapterMergeSchema = z.strictObject({
  merge_method: z.enum(COMBINATION_TYPES),
  base_model: z.string(),
  adapters: z.array(z.strictObject({ adapter: z.string(), weight: z.number() })).min(1),
  parameters: z.strictObject({
    density: z.number().min(0).max(1).optional(),
    svd_rank: z.number().int().positive().optional(),
    svd_clamp: z.number().gt(0).max(1).optional(),
    majority_sign_method: z.enum(["total", "frequency"]).optional(),
  }).nullish(),
});

export interface ModelEntry {
  /** A path (resolved against the config's folder), or model+adapter. */
  model: string;
  parameters: Record<string, ParameterSetting>;
}

export interface ModelMergeConfig {
  kind: "model";
  mergeMethod: string;
  baseModel?: string;
  models: ModelEntry[];
  parameters: Record<string, ParameterSetting>;
  /** Compute is always f32; `dtype` allows inputs of mixed dtypes and sets the output dtype. */
  dtype?: FloatDtype;
  outDtype?: FloatDtype;
  /** "base" or a model reference whose tokenizer files are copied. */
  tokenizerSource?: string;
  /** The config as written, saved beside the merged model. */
  raw: unknown;
}

export interface AdapterEntry {
  adapter: string;
  weight: number;
}

export interface AdapterMergeConfig {
  kind: "adapter";
  combinationType: CombinationType;
  baseModel: string;
  adapters: AdapterEntry[];
  density?: number;
  svdRank?: number;
  svdClamp?: number;
  majoritySignMethod: "total" | "frequency";
  raw: unknown;
}

export type MergeConfig = ModelMergeConfig | AdapterMergeConfig;

/** Reads and validates a merge YAML; relative paths resolve against the file's folder. */
export function loadMergeConfig(file: string): MergeConfig {
  const raw = readYamlFile(file);
  return parseMergeConfig(raw, file, path.dirname(path.resolve(file)));
}

/** Validates a parsed config; `baseDir` resolves relative paths (default: the current directory). */
export function parseMergeConfig(raw: unknown, file = "merge config", baseDir = process.cwd()): MergeConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FormatError(file, "expected a mapping of config keys");
  const record = raw as Record<string, unknown>;
  for (const [key, why] of Object.entries(UNSUPPORTED_KEYS)) {
    if (record[key] !== undefined) throw new FormatError(file, `${key}: ${why}`);
  }
  const resolve = (p: string) => resolveReference(p, baseDir);
  if (record.adapters !== undefined) {
    const c = validate(adapterMergeSchema, raw, file);
    const needsDensity = c.merge_method !== "linear" && c.merge_method !== "cat" && c.merge_method !== "svd";
    if (needsDensity && c.parameters?.density === undefined) {
      throw new FormatError(file, `parameters.density: required by merge_method ${c.merge_method}`);
    }
    return {
      kind: "adapter",
      combinationType: c.merge_method,
      baseModel: path.resolve(baseDir, c.base_model),
      adapters: c.adapters.map((a) => ({ adapter: path.resolve(baseDir, a.adapter), weight: a.weight })),
      density: c.parameters?.density,
      svdRank: c.parameters?.svd_rank,
      svdClamp: c.parameters?.svd_clamp,
      majoritySignMethod: c.parameters?.majority_sign_method ?? "total",
      raw,
    };
  }
  const c = validate(modelMergeSchema, raw, file);
  if (c.tokenizer_source === "union") throw new FormatError(file, `tokenizer_source: "union" (vocabulary union) is not supported; use "base" or a model`);
  return {
    kind: "model",
    mergeMethod: c.merge_method,
    baseModel: c.base_model ? resolve(c.base_model) : undefined,
    models: c.models.map((m) => ({ model: resolve(m.model), parameters: (m.parameters ?? {}) as Record<string, ParameterSetting> })),
    parameters: (c.parameters ?? {}) as Record<string, ParameterSetting>,
    dtype: c.dtype ? DTYPES[c.dtype] : undefined,
    outDtype: c.out_dtype ? DTYPES[c.out_dtype] : undefined,
    tokenizerSource: c.tokenizer_source === "base" || !c.tokenizer_source ? c.tokenizer_source ?? undefined : resolve(c.tokenizer_source),
    raw,
  };
}

/** Resolves a path, or each side of model+adapter, against the config's folder. */
function resolveReference(ref: string, baseDir: string): string {
  const plus = ref.lastIndexOf("+");
  if (plus > 0) {
    const adapter = path.resolve(baseDir, ref.slice(plus + 1));
    if (fs.existsSync(path.join(adapter, "adapter_config.json"))) return `${path.resolve(baseDir, ref.slice(0, plus))}+${adapter}`;
  }
  return path.resolve(baseDir, ref);
}

function validate<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new FormatError(file, parsed.error.issues.map((i) => (i.code === "unrecognized_keys"
      ? i.keys.map((k) => `${formatPath([...i.path, k])}: unknown key`).join("; ")
      : `${formatPath(i.path)}: ${describeIssue(i)}`)).join("; "));
  }
  return parsed.data;
}

function formatPath(p: readonly PropertyKey[]): string {
  if (p.length === 0) return "(root)";
  return p.map((k, i) => (typeof k === "number" ? `[${k}]` : `${i ? "." : ""}${String(k)}`)).join("");
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_union") return "expected a number, a boolean, a list of numbers (gradient) or a list of {filter, value}";
  return issue.message;
}
