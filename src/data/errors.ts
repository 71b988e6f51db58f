import { FormatError } from "../io/errors.ts";

/**
 * A FormatError at one row of a data file: "train.jsonl:17: message". For CSV the line is where
 * the record starts, since a quoted field may span lines. `file` stays the bare path, as for
 * every FormatError, so callers can still match on it.
 */
export class RowError extends FormatError {
  constructor(file: string, readonly line: number, message: string) {
    super(file, message);
    this.message = `${file}:${line}: ${message}`;
    this.name = "RowError";
  }
}
