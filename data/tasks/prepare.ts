// Rebuilds the small data slices of the built-in tasks from ../shared/datasets (MIT) and the
// synthetic generator, so that a clone without ../shared can evaluate. Deterministic: running it
// again writes the same bytes. Usage: npx tsx data/tasks/prepare.ts [datasets-dir]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { shuffledIndices } from "../../src/data/shuffle.ts";
import { writeSyntheticTask } from "../../src/data/synthetic.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const [source = path.join(here, "../../../shared/datasets")] = process.argv.slice(2);
const jsonl = (rows: unknown[]) => `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;
const write = (file: string, text: string) => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  process.stdout.write(`${path.relative(process.cwd(), file)}: ${text.split("\n").length - 1} rows\n`);
};

// SST-5: all of dev (1,101 rows) to evaluate on; 500 training rows (shuffled, seed 2013) for demonstrations.
const sst5 = (file: string) => fs.readFileSync(path.join(source, "sst5", file), "utf8").split("\n").filter(Boolean).map((line, i) => {
  const m = /^__label__([1-5])\t(.+)$/.exec(line);
  if (!m) throw new Error(`${file}:${i + 1}: expected "__label__N<TAB>sentence"`);
  return { sentence: m[2].trim(), label: Number(m[1]) - 1 };
});
write(path.join(here, "sst5", "dev.jsonl"), jsonl(sst5("sst_dev.txt")));
const sst5Train = sst5("sst_train.txt");
write(path.join(here, "sst5", "train-500.jsonl"), jsonl(Array.from(shuffledIndices(sst5Train.length, 2013).slice(0, 500), (i) => sst5Train[i])));
fs.copyFileSync(path.join(source, "sst5", "LICENSE"), path.join(here, "sst5", "LICENSE"));

// GSM8K: the first 200 training problems to evaluate on and the next 50 for demonstrations (the test split stays aside).
const gsm8k = fs.readFileSync(path.join(source, "gsm8k", "train.jsonl"), "utf8").split("\n").filter(Boolean).slice(0, 250);
write(path.join(here, "gsm8k", "eval-200.jsonl"), `${gsm8k.slice(0, 200).join("\n")}\n`);
write(path.join(here, "gsm8k", "fewshot-50.jsonl"), `${gsm8k.slice(200).join("\n")}\n`);
fs.copyFileSync(path.join(source, "gsm8k", "LICENSE"), path.join(here, "gsm8k", "LICENSE"));

// Generated tasks (src/data/synthetic.ts): a clean held-out set (seed 2) and 200 rows of the training
// stream for demonstrations (seed 1). extreme-digit's held-out set is the demo's (500 rows, seed 2).
const generated: { task: string; generator: string; testRows: number; options?: Record<string, unknown> }[] = [
  { task: "extreme-digit", generator: "extreme-digit", testRows: 500 },
  { task: "digit-parity", generator: "digit-parity", testRows: 300 },
  { task: "is-sorted", generator: "is-sorted", testRows: 300 },
  { task: "sequence-reverse", generator: "sequence", testRows: 300, options: { op: "reverse" } },
  { task: "tint-sum", generator: "tint", testRows: 300, options: { fn: "sum" } },
  { task: "tint-min", generator: "tint", testRows: 300, options: { fn: "min" } },
  // Every fact of the default knowledge base (100 facts) asked once.
  { task: "kv-recall", generator: "kv-recall", testRows: 100 },
];
for (const { task, generator, testRows, options } of generated) {
  writeSyntheticTask(generator, path.join(here, task, "test.jsonl"), testRows, 2, options);
  writeSyntheticTask(generator, path.join(here, task, "train-200.jsonl"), 200, 1, options);
  process.stdout.write(`${task}: test.jsonl (${testRows} rows, seed 2), train-200.jsonl (200 rows, seed 1)\n`);
}
// kv-recall's knowledge itself, each fact stated once: the text to train into a model before asking.
writeSyntheticTask("kv-recall", path.join(here, "kv-recall", "facts.jsonl"), 100, 1, { format: "fact" });
process.stdout.write("kv-recall: facts.jsonl (100 facts)\n");
