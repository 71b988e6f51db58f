import { RowError } from "./errors.ts";

/** One CSV record and the 1-based line it starts on, which every error about it names. */
export interface CsvRecord {
  line: number;
  fields: string[];
}

const LINE_BREAK = /\r\n|\r|\n/g;

/**
 * RFC 4180 records: fields separated by commas, quoted fields may hold commas, line breaks and
 * doubled quotes. Lines may end in CRLF, LF or CR, and blank lines between records are skipped,
 * as pandas (and so Hugging Face datasets) does. A quote inside an unquoted field or text after a
 * closing quote is an error rather than a guess, since lenient readers disagree on what it means.
 */
export function parseCsv(text: string, file: string): CsvRecord[] {
  const records: CsvRecord[] = [];
  let line = 1;
  let i = 0;

  const lineBreakLength = (at: number): number => (text.startsWith("\r\n", at) ? 2 : text[at] === "\r" || text[at] === "\n" ? 1 : 0);

  const quotedField = (recordLine: number): string => {
    let value = "";
    i++;
    for (;;) {
      const close = text.indexOf('"', i);
      if (close === -1) throw new RowError(file, recordLine, "quoted field is never closed");
      const piece = text.slice(i, close);
      value += piece;
      line += piece.match(LINE_BREAK)?.length ?? 0;
      if (text[close + 1] !== '"') {
        i = close + 1;
        return value;
      }
      value += '"';
      i = close + 2;
    }
  };

  const unquotedField = (recordLine: number): string => {
    const start = i;
    while (i < text.length && text[i] !== "," && lineBreakLength(i) === 0) {
      if (text[i] === '"') throw new RowError(file, recordLine, 'quote inside an unquoted field: quote the whole field and double its quotes ("")');
      i++;
    }
    return text.slice(start, i);
  };

  while (i < text.length) {
    const blank = lineBreakLength(i);
    if (blank > 0) {
      i += blank;
      line++;
      continue;
    }
    const record: CsvRecord = { line, fields: [] };
    for (;;) {
      record.fields.push(text[i] === '"' ? quotedField(record.line) : unquotedField(record.line));
      if (text[i] !== ",") break;
      i++;
    }
    const end = lineBreakLength(i);
    if (end === 0 && i < text.length) throw new RowError(file, record.line, `unexpected ${JSON.stringify(text[i])} after a closing quote`);
    i += end;
    line++;
    records.push(record);
  }
  return records;
}
