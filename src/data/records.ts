import { extname } from "node:path";
import { FormatError } from "../io/errors.ts";
import { readTextFile } from "../io/files.ts";
import { parseCsv } from "./csv.ts";
import { RowError } from "./errors.ts";

/** One row of a data file, with the line it starts on for error messages. */
export interface Row {
  line: number;
  values: Record<string, unknown>;
}

/**
 * Reads the rows of a JSON Lines (.jsonl: one JSON object per line, blank lines skipped) or CSV
 * (.csv: a header row naming the columns; every value is a string) file.
 */
export function readRows(file: string): Row[] {
  const format = extname(file).toLowerCase();
  if (format !== ".jsonl" && format !== ".csv") {
    throw new FormatError(file, `unsupported data file type "${format}": use .jsonl (one JSON object per line) or .csv`);
  }
  const text = readTextFile(file);
  return format === ".jsonl" ? jsonlRows(text, file) : csvRows(text, file);
}

function jsonlRows(text: string, file: string): Row[] {
  const rows: Row[] = [];
  text.split("\n").forEach((lineText, index) => {
    if (lineText.trim() === "") return;
    const line = index + 1;
    let value: unknown;
    try {
      value = JSON.parse(lineText);
    } catch (error) {
      throw new RowError(file, line, `invalid JSON: ${(error as Error).message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new RowError(file, line, `expected a JSON object, got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`);
    }
    rows.push({ line, values: value as Record<string, unknown> });
  });
  return rows;
}

function csvRows(text: string, file: string): Row[] {
  const [header, ...records] = parseCsv(text, file);
  if (header === undefined) return [];
  const duplicate = header.fields.find((name, i) => header.fields.indexOf(name) !== i);
  if (duplicate !== undefined) throw new RowError(file, header.line, `column ${JSON.stringify(duplicate)} appears twice in the header`);
  return records.map(({ line, fields }) => {
    if (fields.length !== header.fields.length) {
      throw new RowError(file, line, `row has ${fields.length} fields, the header has ${header.fields.length}`);
    }
    return { line, values: Object.fromEntries(header.fields.map((name, i) => [name, fields[i]])) };
  });
}
