// Generated tasks with exact answers, seeded so that a dataset is reproducible from its name,
// options, size and seed. Each family lives in generators/; this is the one registry of them.
import fs from "node:fs";
import path from "node:path";
import type { z } from "zod";
import { seededUniform } from "../engine/random.ts";
import { writeFileAtomic } from "../io/files.ts";
import { digitParity, extremeDigit, isSorted } from "./generators/classification.ts";
import type { SyntheticRow, SyntheticTask } from "./generators/common.ts";
import { kvRecall } from "./generators/kv-recall.ts";
import { sequence } from "./generators/sequence.ts";
import { tint } from "./generators/tint.ts";

export type { SyntheticRow, SyntheticTask } from "./generators/common.ts";

export const SYNTHETIC_TASKS: Record<string, SyntheticTask> = {
  "extreme-digit": extremeDigit,
  "digit-parity": digitParity,
  "is-sorted": isSorted,
  sequence,
  tint,
  "kv-recall": kvRecall,
};

export function syntheticTask(name: string): SyntheticTask {
  const task = SYNTHETIC_TASKS[name];
  if (!task) throw new Error(`unknown synthetic task "${name}" (known: ${Object.keys(SYNTHETIC_TASKS).join(", ")})`);
  return task;
}

/** A task's options with every default filled in; a wrong or unknown key is an error naming it. */
export function parseSyntheticOptions(name: string, options: unknown = {}): unknown {
  const parsed = syntheticTask(name).options.safeParse(options);
  if (parsed.success) return parsed.data;
  throw new Error(`${name}: ${parsed.error.issues.map(describeIssue).join("; ")}`);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const at = issue.path.map(String);
  if (issue.code === "unrecognized_keys") return issue.keys.map((key) => `${[...at, key].join(".")}: unknown option`).join("; ");
  return `${at.join(".") || "(options)"}: ${issue.message}`;
}

/** `count` rows of a task, drawn from one seeded stream. */
export function syntheticRows(name: string, count: number, seed: number, options: unknown = {}): SyntheticRow[] {
  const next = syntheticTask(name).rows(parseSyntheticOptions(name, options), seededUniform(seed));
  return Array.from({ length: count }, next);
}

/** Writes `count` rows of a task as JSONL (atomically) and returns the file. */
export function writeSyntheticTask(name: string, file: string, count: number, seed: number, options: unknown = {}): string {
  const lines = syntheticRows(name, count, seed, options).map((row) => JSON.stringify(row));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, `${lines.join("\n")}\n`);
  return file;
}
