// Task files: a small YAML in the spirit of lm-evaluation-harness, validated with zod (unknown keys
// and wrong types are errors naming the key and the file). Built-in tasks live in data/tasks.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { FormatError } from "../../io/errors.ts";
import { readYamlFile } from "../../io/files.ts";
import {
  compileExtractor, EXTRACTION_PRESETS, METRIC_NAMES, METRICS_BY_OUTPUT_TYPE, NORMALIZER_NAMES,
  type ExtractionSpec, type MetricName, type NormalizerName, type OutputType,
} from "../metrics.ts";

const positiveInt = z.number().int().positive();
const normalizerName = z.enum(NORMALIZER_NAMES);

const extractionSchema = z.union([
  z.enum(Object.keys(EXTRACTION_PRESETS) as [string, ...string[]]),
  z.strictObject({
    regex: z.string().min(1).optional(),
    group: z.number().int().nonnegative().optional(),
    match: z.enum(["first", "last"]).optional(),
    fallback: z.enum(["last_number", "none"]).optional(),
  }),
]);

const metricSchema = z.union([
  z.enum(METRIC_NAMES as [MetricName, ...MetricName[]]),
  z.strictObject({
    name: z.enum(METRIC_NAMES as [MetricName, ...MetricName[]]),
    /** The key the value is reported under (default: name); needed when one metric appears twice. */
    label: z.string().regex(/^[A-Za-z0-9_.:-]+$/, "letters, digits and _ . : - only").optional(),
    /** Normalisers applied in order to prediction and references (exact_match, f1, rouge_l). */
    normalize: z.union([normalizerName, z.array(normalizerName)]).optional(),
    /** Answer extraction applied to the generated text before normalising (exact_match, f1, rouge_l). */
    extract: extractionSchema.optional(),
  }),
]);

const generationSchema = z.strictObject({
  /** Stop strings; default: the few-shot separator. */
  until: z.array(z.string().min(1)).optional(),
  max_new_tokens: positiveInt.default(256),
  /** 0: greedy. */
  temperature: z.number().nonnegative().default(0),
  top_k: positiveInt.optional(),
  top_p: z.number().gt(0).max(1).optional(),
  seed: z.number().int().default(0),
});

const fewshotSchema = z.strictObject({
  k: z.number().int().nonnegative().default(0),
  seed: z.number().int().default(1234),
  /** Rows to draw demonstrations from (path relative to the task file); default: the task's own data, never the item itself. */
  source: z.string().optional(),
  /** Between demonstrations, and between the last one and the question. */
  separator: z.string().default("\n\n"),
  /** What a demonstration's answer shows (a field or template); default: the task's target. */
  target: z.string().optional(),
});

export const taskSchema = z.strictObject({
  task: z.string().regex(/^[A-Za-z0-9_.-]+$/, "letters, digits and _ . - only"),
  /** Text before everything else (an instruction). */
  description: z.string().default(""),
  /** .jsonl or .csv, relative to the task file. */
  data: z.string().min(1),
  /** Jinja template; the row's fields are its variables. */
  prompt: z.string(),
  output_type: z.enum(Object.keys(METRICS_BY_OUTPUT_TYPE) as [OutputType, ...OutputType[]]),
  /** multiple_choice: a list of strings, or a field/template that gives the row's list. */
  choices: z.union([z.array(z.string()).min(2), z.string().min(1)]).optional(),
  /** A field name or a template: for multiple_choice the answer's index or text, else the reference text. */
  target: z.string().min(1),
  /** Between the prompt and an answer (lm-evaluation-harness's target_delimiter). */
  target_delimiter: z.string().default(" "),
  metrics: z.array(metricSchema).min(1).optional(),
  generation: generationSchema.optional(),
  fewshot: fewshotSchema.default(() => fewshotSchema.parse({})),
  limit: positiveInt.optional(),
});

export interface MetricSpec {
  name: MetricName;
  /** Key in results. */
  label: string;
  normalize?: NormalizerName[];
  extract?: ExtractionSpec | string;
}

export interface TaskConfig {
  task: string;
  /** The task file ("(inline)" for a config built in code). */
  file: string;
  description: string;
  /** Absolute path. */
  data: string;
  prompt: string;
  outputType: OutputType;
  choices?: string[] | string;
  target: string;
  targetDelimiter: string;
  metrics: MetricSpec[];
  generation: z.infer<typeof generationSchema>;
  fewshot: { k: number; seed: number; source?: string; separator: string; target?: string };
  limit?: number;
}

export type TaskYaml = z.input<typeof taskSchema>;

/** Reads and validates a task file; data paths resolve against its folder. */
export function loadTask(file: string): TaskConfig {
  const raw = readYamlFile(file);
  return parseTask(raw, file, path.dirname(path.resolve(file)));
}

/** Validates a task given as an object (paths relative to `baseDir`); `file` names it in errors. */
export function parseTask(raw: unknown, file = "(inline task)", baseDir = process.cwd()): TaskConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FormatError(file, "expected a mapping of task keys");
  const parsed = taskSchema.safeParse(raw);
  if (!parsed.success) {
    throw new FormatError(file, describeIssues(parsed.error.issues).join("; "));
  }
  const t = parsed.data;
  const fail = (key: string, message: string): never => {
    throw new FormatError(file, `${key}: ${message}`);
  };
  const allowed: readonly string[] = METRICS_BY_OUTPUT_TYPE[t.output_type];
  const labelled = t.output_type === "multiple_choice" || t.output_type === "classification";
  if (labelled && t.choices === undefined) fail("choices", `required for output_type ${t.output_type} (the answers, or a classifier's labels in order)`);
  if (!labelled && t.choices !== undefined) fail("choices", `only for output_type multiple_choice or classification, not ${t.output_type}`);
  if (t.output_type === "classification" && (t.fewshot?.k ?? 0) > 0) fail("fewshot", "a classification head takes no demonstrations (k must be 0)");
  if (t.output_type !== "generate_until" && t.generation !== undefined) fail("generation", `only for output_type generate_until, not ${t.output_type}`);

  const metrics: MetricSpec[] = (t.metrics ?? allowed.map((name) => name as MetricName)).map((m, i) => {
    const spec = typeof m === "string" ? { name: m } : m;
    const key = `metrics.${i}`;
    if (!allowed.includes(spec.name)) fail(key, `${spec.name} does not apply to output_type ${t.output_type} (use ${allowed.join(", ")})`);
    const options = spec as { normalize?: NormalizerName | NormalizerName[]; extract?: ExtractionSpec | string; label?: string };
    if ((options.normalize !== undefined || options.extract !== undefined) && t.output_type !== "generate_until") {
      fail(key, "normalize and extract apply to generated text (output_type generate_until)");
    }
    if (options.extract !== undefined) {
      try {
        compileExtractor(options.extract);
      } catch (error) {
        fail(`${key}.extract`, (error as Error).message);
      }
    }
    return {
      name: spec.name,
      label: options.label ?? spec.name,
      normalize: options.normalize === undefined ? undefined : [options.normalize].flat(),
      extract: options.extract,
    };
  });
  const labels = metrics.map((m) => m.label);
  const duplicate = labels.find((l, i) => labels.indexOf(l) !== i);
  if (duplicate !== undefined) fail("metrics", `"${duplicate}" appears twice: give one of them a label`);

  const resolve = (p: string) => path.resolve(baseDir, p);
  const generation = t.generation ?? generationSchema.parse({});
  return {
    task: t.task,
    file,
    description: t.description,
    data: resolve(t.data),
    prompt: t.prompt,
    outputType: t.output_type,
    choices: t.choices,
    target: t.target,
    targetDelimiter: t.target_delimiter,
    metrics,
    generation: { ...generation, until: generation.until ?? [t.fewshot.separator] },
    fewshot: { ...t.fewshot, source: t.fewshot.source === undefined ? undefined : resolve(t.fewshot.source) },
    limit: t.limit,
  };
}

type Issue = z.core.$ZodIssue;

/**
 * "key.path: message" per issue. Where a value matches no alternative of a union (a metric given
 * as a name or as an object), the alternative that got furthest explains it best.
 */
function describeIssues(issues: readonly Issue[], prefix: PropertyKey[] = []): string[] {
  return issues.flatMap((issue) => {
    const at = [...prefix, ...issue.path];
    if (issue.code === "invalid_union" && issue.errors.length) {
      // Deeper issues got further; at equal depth, a wrong value beats a wrong type (wrong alternative).
      const score = (branch: readonly Issue[]) =>
        Math.max(...branch.map((i) => 2 * (i.path.length + (i.code === "invalid_union" ? 1 : 0)) + (i.code === "invalid_type" ? 0 : 1)));
      const best = issue.errors.reduce((a, b) => (score(b) > score(a) ? b : a));
      if (score(best) > 0) return describeIssues(best, at);
    }
    return [`${at.map(String).join(".") || "(root)"}: ${issue.message}`];
  });
}

/** data/tasks of this package: the built-in task files. */
export const BUILTIN_TASK_DIR = fileURLToPath(new URL("../../../data/tasks", import.meta.url));

/** Names of the built-in tasks (data/tasks/<name>.yaml). */
export function builtinTaskNames(): string[] {
  if (!fs.existsSync(BUILTIN_TASK_DIR)) return [];
  return fs.readdirSync(BUILTIN_TASK_DIR).filter((f) => f.endsWith(".yaml")).map((f) => f.slice(0, -".yaml".length)).sort();
}

/**
 * Tasks from a comma-separated list of built-in names and task files (anything ending in .yaml or
 * .yml, or containing a path separator, is a file).
 */
export function resolveTasks(spec: string): TaskConfig[] {
  const items = spec.split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new Error("no tasks given");
  const tasks = items.map((item) => {
    if (/\.ya?ml$/i.test(item) || item.includes("/") || item.includes(path.sep)) return loadTask(item);
    const file = path.join(BUILTIN_TASK_DIR, `${item}.yaml`);
    if (!fs.existsSync(file)) throw new Error(`unknown task "${item}": not a built-in task (${builtinTaskNames().join(", ")}) and not a .yaml file`);
    return loadTask(file);
  });
  const names = tasks.map((t) => t.task);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate !== undefined) throw new Error(`task "${duplicate}" is given twice`);
  return tasks;
}
