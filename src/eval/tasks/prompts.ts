// Few-shot prompts: description, demonstrations (prompt + delimiter + answer) each followed by the
// separator, then the item's own prompt, as lm-evaluation-harness lays them out.
import { FewShotSampler } from "../fewshot.ts";
import type { TaskConfig } from "./config.ts";
import type { TaskDocument } from "./documents.ts";

export interface PromptParts {
  description: string;
  /** Complete demonstrations in the order they appear. */
  demonstrations: string[];
  separator: string;
  question: string;
}

/** The prompt with the last `shots` demonstrations (the earliest are dropped first when a prompt must shrink). */
export function renderPrompt(parts: PromptParts, shots = parts.demonstrations.length): string {
  const demos = shots <= 0 ? [] : parts.demonstrations.slice(-shots);
  return parts.description + demos.map((d) => d + parts.separator).join("") + parts.question;
}

/**
 * The prompt parts of every document: `k` demonstrations per item drawn by a sampler seeded with
 * `seed` from `pool` (another split) or from the documents themselves, never the item itself.
 */
export function promptParts(task: TaskConfig, docs: readonly TaskDocument[], pool: readonly TaskDocument[] | undefined, k: number, seed: number): PromptParts[] {
  const sampler = new FewShotSampler(pool ?? docs, seed, (d) => d.key);
  return docs.map((doc) => ({
    description: task.description,
    demonstrations: sampler.sample(k, doc.index, doc).map((d) => d.prompt + task.targetDelimiter + d.demonstration),
    separator: task.fewshot.separator,
    question: doc.prompt,
  }));
}
