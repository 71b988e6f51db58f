// A task's rows turned into documents: rendered prompt, choices and gold index (multiple choice) or
// reference texts (generation, log-likelihood), and the answer a demonstration shows.
import YAML from "yaml";
import { readRows, type Row } from "../../data/records.ts";
import { FormatError } from "../../io/errors.ts";
import { RowTemplate } from "../template.ts";
import type { TaskConfig } from "./config.ts";

export interface TaskDocument {
  /** Position in its data file (0-based, blank lines not counted). */
  index: number;
  /** Line in the data file, for messages. */
  line: number;
  /** Identity of the row, so that an item is never its own demonstration. */
  key: string;
  prompt: string;
  /** multiple_choice: the answer options and the index of the right one. */
  choices?: string[];
  gold?: number;
  /** The right answer(s) as text: the gold choice, or the reference(s) of a generation. */
  references: string[];
  /** What this document shows as an answer when it is a demonstration. */
  demonstration: string;
}

const isTemplate = (spec: string) => spec.includes("{{") || spec.includes("{%");

/** Compiled field-or-template accessors of one task. */
class TaskAccessors {
  private readonly prompt: RowTemplate;
  private readonly target: RowTemplate | string;
  private readonly choices: RowTemplate | string | string[] | undefined;
  private readonly demo: RowTemplate | string | undefined;

  constructor(private readonly task: TaskConfig) {
    const accessor = (spec: string, key: string) => (isTemplate(spec) ? new RowTemplate(spec, task.file, key) : spec);
    this.prompt = new RowTemplate(task.prompt, task.file, "prompt");
    this.target = accessor(task.target, "target");
    this.choices = typeof task.choices === "string" ? accessor(task.choices, "choices") : task.choices;
    this.demo = task.fewshot.target === undefined ? undefined : accessor(task.fewshot.target, "fewshot.target");
  }

  document(row: Row, index: number, file: string): TaskDocument {
    const at = `${file}:${row.line}`;
    const fail = (key: string, message: string): never => {
      throw new FormatError(this.task.file, `${key}: ${at}: ${message}`);
    };
    const value = (spec: RowTemplate | string, key: string): unknown => {
      if (spec instanceof RowTemplate) return spec.render(row.values, at);
      if (!(spec in row.values)) fail(key, `no field "${spec}" (fields: ${Object.keys(row.values).join(", ")})`);
      return row.values[spec];
    };
    const prompt = this.prompt.render(row.values, at);
    const target = value(this.target, "target");
    const base = { index, line: row.line, key: JSON.stringify(row.values), prompt };

    if (this.task.outputType === "multiple_choice" || this.task.outputType === "classification") {
      const choices = this.choiceList(value, fail);
      const gold = goldIndex(target, choices);
      if (gold === undefined) fail("target", `${JSON.stringify(target)} is neither one of the choices ${JSON.stringify(choices)} nor an index into them`);
      return { ...base, choices, gold, references: [choices[gold!]], demonstration: choices[gold!] };
    }

    const references = referenceList(target);
    if (references === undefined || references.length === 0) fail("target", `expected text (or a list of texts), got ${JSON.stringify(target)}`);
    if (this.task.outputType === "loglikelihood" && references!.length !== 1) fail("target", "a log-likelihood task scores one continuation per row, not a list");
    if (this.task.outputType === "loglikelihood" && references![0] === "" && this.task.targetDelimiter === "") fail("target", "the continuation to score is empty");
    let demonstration = references![0];
    if (this.demo !== undefined) {
      const shown = value(this.demo, "fewshot.target");
      if (typeof shown !== "string" && typeof shown !== "number") fail("fewshot.target", `expected text, got ${JSON.stringify(shown)}`);
      demonstration = String(shown);
    }
    return { ...base, references: references!, demonstration };
  }

  private choiceList(value: (spec: RowTemplate | string, key: string) => unknown, fail: (key: string, message: string) => never): string[] {
    if (Array.isArray(this.choices)) return this.choices;
    let list = value(this.choices!, "choices");
    if (this.choices instanceof RowTemplate) {
      // Jinja writes a list as ["a", "b"] (JSON) or with single quotes (YAML reads both).
      try {
        list = YAML.parse(list as string);
      } catch {
        fail("choices", `the template rendered ${JSON.stringify(list)}, not a list`);
      }
    }
    if (!Array.isArray(list) || list.length < 2 || !list.every((c) => typeof c === "string" || typeof c === "number")) {
      fail("choices", `expected a list of at least 2 strings, got ${JSON.stringify(list)}`);
    }
    return (list as unknown[]).map(String);
  }
}

/** The gold index of a multiple-choice target: an index, the text of a choice, or an index as text. */
export function goldIndex(target: unknown, choices: readonly string[]): number | undefined {
  if (typeof target === "number") return Number.isInteger(target) && target >= 0 && target < choices.length ? target : undefined;
  if (typeof target !== "string") return undefined;
  const byText = choices.indexOf(target);
  if (byText >= 0) return byText;
  if (/^\s*\d+\s*$/.test(target)) return goldIndex(Number(target), choices);
  return undefined;
}

function referenceList(target: unknown): string[] | undefined {
  if (typeof target === "string") return [target];
  if (typeof target === "number") return [String(target)];
  if (Array.isArray(target) && target.every((t) => typeof t === "string")) return target;
  return undefined;
}

/** The documents of a data file, the first `limit` of them when given. */
export function loadDocuments(task: TaskConfig, file: string, limit?: number): TaskDocument[] {
  const rows = readRows(file);
  if (rows.length === 0) throw new FormatError(file, "no rows");
  const accessors = new TaskAccessors(task);
  return rows.slice(0, limit).map((row, i) => accessors.document(row, i, file));
}
