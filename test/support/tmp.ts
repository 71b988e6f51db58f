// Per-file temp folders, removed when the test file ends.
import { after } from "node:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A function that returns a new empty folder under one temp root for this test file. */
export function tempDirs(prefix: string): () => string {
  const root = mkdtempSync(join(tmpdir(), `${prefix}-`));
  after(() => rmSync(root, { recursive: true, force: true }));
  let count = 0;
  return () => {
    const dir = join(root, `case-${++count}`);
    mkdirSync(dir);
    return dir;
  };
}
