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

// extreme-digit: the demo's held-out set (500 rows, seed 2) and 200 rows of its training stream (seed 1).
writeSyntheticTask("extreme-digit", path.join(here, "extreme-digit", "test.jsonl"), 500, 2);
writeSyntheticTask("extreme-digit", path.join(here, "extreme-digit", "train-200.jsonl"), 200, 1);
process.stdout.write("extreme-digit: test.jsonl (500 rows, seed 2), train-200.jsonl (200 rows, seed 1)\n");
