// Writes the task suite's training data into .cache/suite/data (about 3 MB, regenerated
// byte-identically from the generators' seeds): the mixture the suite's base model is pretrained
// on (suite/pretrain.yaml) and the TInt fine-tuning sets, clean and noised (suite/tint-noise.yaml).
// Training rows use seed 11 so that they are not the evaluation rows of data/tasks (seed 2).
// Usage: npx tsx suite/prepare.ts
import fs from "node:fs";
import path from "node:path";
import { readRows } from "../src/data/records.ts";
import { writeSyntheticTask } from "../src/data/synthetic.ts";
import { writeFileAtomic } from "../src/io/files.ts";

const ROOT = path.join(import.meta.dirname, "..");
const OUT = path.join(ROOT, ".cache", "suite", "data");
const TRAIN_SEED = 11;
const ROWS = 3000;

const pretraining: [file: string, task: string, options: object][] = [
  ["kv-recall-facts", "kv-recall", { format: "fact" }],
  ["kv-recall", "kv-recall", {}],
  ["sequence-copy", "sequence", { op: "copy" }],
  ["sequence-reverse", "sequence", { op: "reverse" }],
  ["sequence-sort", "sequence", { op: "sort" }],
  ["digit-parity", "digit-parity", {}],
  ["is-sorted", "is-sorted", {}],
  ["extreme-digit", "extreme-digit", {}],
  ["tint-max", "tint", { fn: "max" }],
];
for (const [file, task, options] of pretraining) writeSyntheticTask(task, path.join(OUT, `${file}.jsonl`), ROWS, TRAIN_SEED, options);

// General text: the review sentences of data/sst2 without their labels.
const reviews = readRows(path.join(ROOT, "data", "sst2", "train.jsonl")).map(({ values }) =>
  JSON.stringify({ text: String(values.prompt).replace(/^Review: /, "").replace(/\nSentiment:$/, "") }));
writeFileAtomic(path.join(OUT, "reviews.jsonl"), `${reviews.join("\n")}\n`);

// The TInt noise study on the running minimum (the suite's base learns it in a few hundred steps; it
// does not learn the running sum mod 10 or the running count: see suite/README.md): the same 2000 lists (one seed) clean, and with static or dynamic noise on
// half of the rows at two intensities; a higher intensity corrupts a superset of the steps.
const variants: [name: string, noise: object][] = [
  ["clean", { kind: "none" }],
  ["static-20", { kind: "static", rate: 0.5, intensity: 0.2 }],
  ["static-50", { kind: "static", rate: 0.5, intensity: 0.5 }],
  ["dynamic-20", { kind: "dynamic", rate: 0.5, intensity: 0.2 }],
  ["dynamic-50", { kind: "dynamic", rate: 0.5, intensity: 0.5 }],
];
for (const [name, noise] of variants) writeSyntheticTask("tint", path.join(OUT, `tint-min-${name}.jsonl`), 2000, TRAIN_SEED, { fn: "min", noise });

const files = fs.readdirSync(OUT);
process.stdout.write(`wrote ${files.length} files to ${path.relative(ROOT, OUT)}: ${files.join(", ")}\n`);
