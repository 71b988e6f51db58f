// Builds data/sst2 from the SST-5 files (../shared/datasets/sst5, MIT): labels 1-2 become
// negative, 4-5 positive, neutral 3 is dropped, as SST-2 does. Rows are prompt/completion pairs.
// The source files are sorted by label, so rows are shuffled with a fixed seed: any prefix of a
// split is then a fair sample. Usage: npx tsx scripts/prepare-sst2.ts [sst5-dir] [out-dir]
import fs from "node:fs";
import path from "node:path";
import { shuffledIndices } from "../src/data/shuffle.ts";

const [source = "../shared/datasets/sst5", out = "data/sst2"] = process.argv.slice(2);
fs.mkdirSync(out, { recursive: true });
for (const [input, output] of [["sst_train.txt", "train.jsonl"], ["sst_dev.txt", "dev.jsonl"]]) {
  const rows = fs.readFileSync(path.join(source, input), "utf8").split("\n").filter(Boolean).flatMap((line, i) => {
    const m = /^__label__([1-5])\t(.+)$/.exec(line);
    if (!m) throw new Error(`${input}:${i + 1}: expected "__label__N<TAB>sentence"`);
    const label = Number(m[1]);
    if (label === 3) return [];
    return [JSON.stringify({ prompt: `Review: ${m[2].trim()}\nSentiment:`, completion: label < 3 ? " negative" : " positive" })];
  });
  const order = shuffledIndices(rows.length, 2013);
  fs.writeFileSync(path.join(out, output), `${Array.from(order, (i) => rows[i]).join("\n")}\n`);
  process.stdout.write(`${output}: ${rows.length} rows\n`);
}
fs.copyFileSync(path.join(source, "LICENSE"), path.join(out, "LICENSE"));
