// Generated tasks with exact answers, seeded so that a dataset is reproducible from its name,
// size and seed. Rows are prompt/completion pairs; `choices` lists every possible completion so
// that accuracy can be scored by log-likelihood.
import fs from "node:fs";
import path from "node:path";
import { seededUniform } from "../engine/random.ts";
import { writeFileAtomic } from "../io/files.ts";

export interface SyntheticTask {
  description: string;
  choices: string[];
  row(random: () => number): { prompt: string; completion: string };
}

const DIGITS = Array.from({ length: 10 }, (_, d) => ` ${d}`);

function digitList(random: () => number, min: number, max: number): number[] {
  const n = min + Math.floor(random() * (max - min + 1));
  return Array.from({ length: n }, () => Math.floor(random() * 10));
}

export const SYNTHETIC_TASKS: Record<string, SyntheticTask> = {
  "extreme-digit": {
    description: "the largest or the smallest digit of a list of 4 to 8 digits",
    choices: DIGITS,
    row(random) {
      const digits = digitList(random, 4, 8);
      const largest = random() < 0.5;
      return {
        prompt: `Digits: ${digits.join(" ")}\n${largest ? "Largest" : "Smallest"}:`,
        completion: ` ${largest ? Math.max(...digits) : Math.min(...digits)}`,
      };
    },
  },
};

/** Writes `count` rows of a task as JSONL (atomically) and returns the file. */
export function writeSyntheticTask(name: string, file: string, count: number, seed: number): string {
  const task = SYNTHETIC_TASKS[name];
  if (!task) throw new Error(`unknown synthetic task "${name}" (known: ${Object.keys(SYNTHETIC_TASKS).join(", ")})`);
  const random = seededUniform(seed);
  const lines = Array.from({ length: count }, () => JSON.stringify(task.row(random)));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, `${lines.join("\n")}\n`);
  return file;
}
