import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FormatError } from "../io/errors.ts";
import { writeFileAtomic } from "../io/files.ts";

export const METRICS_FILE = "metrics.jsonl";

/**
 * One line of metrics.jsonl: the optimizer step plus any numeric metrics, e.g. `loss`, `lr`, `tokens_per_s`,
 * `elapsed_s`, `eval_loss`, `eval_accuracy`, `loss/<task>`. JSON cannot spell NaN or Infinity, so non-finite
 * values (a diverged loss) are written as null and read back as NaN.
 */
export interface MetricsRecord {
  step: number;
  [key: string]: number;
}

/** A metrics.jsonl line that is not a valid record; `line` is 1-based. */
export class MetricsFormatError extends FormatError {
  constructor(file: string, public readonly line: number, detail: string) {
    super(file, detail);
    this.name = "MetricsFormatError";
    this.message = `${file}:${line}: ${detail}`;
  }
}

/** Appends records to `<runDir>/metrics.jsonl`, one JSON object per line. */
export class MetricsLog {
  readonly file: string;
  private fd: number | null;

  /**
   * A fresh run starts an empty log, so records of an earlier run in the same directory cannot mix in. A run
   * resumed from the checkpoint at step k passes `resumeFromStep: k`: records after k are dropped (they are
   * about to be produced again) and new ones are appended, so the log reads as if the run was never interrupted.
   */
  constructor(runDir: string, options: { resumeFromStep?: number } = {}) {
    mkdirSync(runDir, { recursive: true });
    this.file = join(runDir, METRICS_FILE);
    const resuming = options.resumeFromStep !== undefined;
    if (resuming) truncateMetricsAfter(this.file, options.resumeFromStep!);
    this.fd = openSync(this.file, resuming ? "a" : "w");
  }

  append(record: MetricsRecord): void {
    if (this.fd === null) throw new Error(`${this.file}: append after close`);
    const problem = recordProblem(record);
    if (problem) throw new TypeError(`${this.file}: ${problem}`);
    // Step first keeps the file easy to scan by eye; JSON.stringify turns NaN/Infinity into null.
    const { step, ...values } = record;
    appendFileSync(this.fd, JSON.stringify({ step, ...values }) + "\n");
  }

  /** Flushes the log to disk and closes it; further appends throw. Closing twice is a no-op. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** Parses a metrics.jsonl file; throws MetricsFormatError naming file:line for a line that is not a record. */
export function readMetrics(file: string): MetricsRecord[] {
  return splitLines(readFileSync(file, "utf8")).map(({ text, line }) => parseLine(file, line, text));
}

/**
 * Drops the records with step > `step` (run resumed from the checkpoint at that step), rewriting the file
 * atomically. A last line cut short by a crash mid-append is dropped too. Returns the number of lines removed;
 * a missing file has nothing to remove.
 */
export function truncateMetricsAfter(file: string, step: number): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`resume step must be a non-negative integer, got ${step}`);
  if (!existsSync(file)) return 0;
  const content = readFileSync(file, "utf8");
  const lines = splitLines(content);
  const kept: string[] = [];
  for (const [i, { text, line }] of lines.entries()) {
    // Every record is written with its newline, so a last line without one is a torn append, not bad data.
    const torn = i === lines.length - 1 && !content.endsWith("\n");
    let record: MetricsRecord;
    try {
      record = parseLine(file, line, text);
    } catch (err) {
      if (torn) continue;
      throw err;
    }
    if (record.step <= step) kept.push(text);
  }
  const removed = lines.length - kept.length;
  if (removed > 0) writeFileAtomic(file, kept.map((text) => text + "\n").join(""));
  return removed;
}

function splitLines(content: string): { text: string; line: number }[] {
  return content
    .split("\n")
    .map((text, i) => ({ text: text.trimEnd(), line: i + 1 }))
    .filter(({ text }) => text.trim() !== "");
}

function parseLine(file: string, line: number, text: string): MetricsRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new MetricsFormatError(file, line, `invalid JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new MetricsFormatError(file, line, "expected a JSON object");
  }
  const record = Object.fromEntries(
    Object.entries(value).map(([key, v]) => [key, v === null ? Number.NaN : v]),
  ) as MetricsRecord;
  const problem = recordProblem(record);
  if (problem) throw new MetricsFormatError(file, line, problem);
  return record;
}

function recordProblem(record: Record<string, unknown>): string | undefined {
  const step = record.step;
  if (typeof step !== "number" || !Number.isInteger(step) || step < 0) {
    return `"step" must be a non-negative integer, got ${JSON.stringify(step) ?? String(step)}`;
  }
  for (const [key, value] of Object.entries(record)) {
    if (typeof value !== "number") return `"${key}" must be a number, got ${JSON.stringify(value) ?? typeof value}`;
  }
  return undefined;
}
