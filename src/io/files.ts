// File primitives every format shares: reads that fail with the file's name, and writes that a
// crash can never leave half-done (temp file beside the target, fsync, rename, fsync the folder).
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import YAML from "yaml";
import { FormatError } from "./errors.ts";

/** UTF-8 text of a file; a byte order mark (Windows editors add one) is dropped. */
export function readTextFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FormatError(file, code === "ENOENT" ? "file not found" : `cannot read: ${(error as Error).message}`);
  }
  return text.startsWith("\uFEFF") ? text.slice(1) : text;
}

export function readJsonFile(file: string): unknown {
  return parseTextFile(file, "JSON", JSON.parse);
}

export function readYamlFile(file: string): unknown {
  return parseTextFile(file, "YAML", YAML.parse);
}

function parseTextFile(file: string, format: string, parse: (text: string) => unknown): unknown {
  const text = readTextFile(file);
  try {
    return parse(text);
  } catch (error) {
    throw new FormatError(file, `invalid ${format}: ${(error as Error).message}`);
  }
}

/** A unique name beside `path`, so that the final rename stays within one filesystem. */
export function tempName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
}

export function writeFully(fd: number, source: Uint8Array, position: number): void {
  for (let done = 0; done < source.length; ) done += writeSync(fd, source, done, source.length - done, position + done);
}

/** A rename is durable only once the directory entry itself is flushed. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces `path` with what `write` puts into a temp file beside it (write must fsync it):
 * readers, and a crash at any moment, see the old file or the whole new one.
 */
export function replaceAtomically(path: string, write: (temp: string) => void): void {
  const temp = tempName(path);
  try {
    write(temp);
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
  syncDirectory(dirname(path));
}

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  replaceAtomically(path, (temp) => {
    const fd = openSync(temp, "wx");
    try {
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  });
}
