// Atomic output folders: everything is written into a temporary sibling folder, which is renamed
// over the destination only when complete, so a failed or killed merge never leaves a partial model.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export class OutputDir {
  readonly target: string;
  readonly temp: string;
  #done = false;

  /** Refuses a non-empty destination unless `overwrite`. */
  constructor(outDir: string, overwrite = false) {
    this.target = path.resolve(outDir);
    if (fs.existsSync(this.target)) {
      if (!fs.statSync(this.target).isDirectory()) throw new Error(`--out ${outDir} exists and is not a folder`);
      if (!overwrite && fs.readdirSync(this.target).length > 0) throw new Error(`--out ${outDir} exists and is not empty (pass --force to replace it)`);
    }
    fs.mkdirSync(path.dirname(this.target), { recursive: true });
    this.temp = path.join(path.dirname(this.target), `.${path.basename(this.target)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
    fs.mkdirSync(this.temp);
  }

  /** Writes a small file into the temporary folder. */
  writeFile(name: string, data: string): void {
    fs.writeFileSync(path.join(this.temp, name), data);
  }

  copyFile(from: string, name = path.basename(from)): void {
    fs.copyFileSync(from, path.join(this.temp, name));
  }

  /** Moves the finished folder into place (replacing an old one), then flushes the parent directory. */
  commit(): string[] {
    if (this.#done) throw new Error("output already committed or discarded");
    for (const name of fs.readdirSync(this.temp)) fsyncPath(path.join(this.temp, name));
    fsyncPath(this.temp);
    let old: string | undefined;
    if (fs.existsSync(this.target)) {
      old = `${this.temp}.old`;
      fs.renameSync(this.target, old);
    }
    try {
      fs.renameSync(this.temp, this.target);
    } catch (err) {
      if (old) fs.renameSync(old, this.target);
      throw err;
    }
    if (old) fs.rmSync(old, { recursive: true, force: true });
    fsyncPath(path.dirname(this.target));
    this.#done = true;
    return fs.readdirSync(this.target).sort().map((name) => path.join(this.target, name));
  }

  discard(): void {
    if (this.#done) return;
    this.#done = true;
    fs.rmSync(this.temp, { recursive: true, force: true });
  }
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
