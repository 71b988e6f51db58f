// tasktune eval: the table, the JSON (identical on a rerun), and --compare's report.html.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import YAML from "yaml";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");
const FIXTURES = path.join(ROOT, "test", "fixtures", "hf");
const DIGITS = path.join(ROOT, "data", "tasks", "extreme-digit");

const scratch = mkdtempSync(path.join(tmpdir(), "tasktune-eval-cli-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

// One ggml thread: on a shared machine a second one mostly waits at barriers.
function tasktune(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args, "--threads", "1"], { encoding: "utf8", cwd: scratch });
}

function taskFile(name: string, spec: Record<string, unknown>): string {
  const file = path.join(scratch, `${name}.yaml`);
  writeFileSync(file, YAML.stringify({ task: name, ...spec }));
  return file;
}

const digits = taskFile("digits", {
  data: path.join(DIGITS, "test.jsonl"), prompt: "{{ prompt }}", output_type: "multiple_choice",
  choices: Array.from({ length: 10 }, (_, d) => ` ${d}`), target: "completion", target_delimiter: "",
  fewshot: { k: 1, source: path.join(DIGITS, "train-200.jsonl") },
});

test("tasktune eval prints a table and writes the same JSON on every run", () => {
  const out = path.join(scratch, "results.json");
  const run = tasktune("eval", "--model", path.join(ROOT, "models", "tiny-llama"), "--tasks", `${digits},sst2`, "--limit", "12", "--fewshot", "2", "--out", out);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^task\s+metric\s+value\s+stderr\s+n\s+shots\n/);
  assert.match(run.stdout, /\ndigits\s+acc\s+0\.\d{4}\s+± 0\.\d{4}\s+12\s+2\n/);
  // SST-2 reviews are long: with 256 positions, some items keep one demonstration of the two.
  assert.match(run.stdout, /\nsst2\s+acc_norm\s+0\.\d{4}\s+± 0\.\d{4}\s+12\s+2 \(avg 1\.50\)\n/);
  assert.match(run.stdout, /\nsst2: to fit 256 tokens, 6 items got fewer than 2 demonstrations \(1\.50 on average\)\n/);
  assert.match(run.stderr, /digits: 12 items, 2-shot \(multiple_choice\)/);
  const results = JSON.parse(readFileSync(out, "utf8"));
  assert.equal(results.model, path.join(ROOT, "models", "tiny-llama"));
  assert.deepEqual(results.tasks.map((t: { task: string; n: number; fewshot: number }) => [t.task, t.n, t.fewshot]), [["digits", 12, 2], ["sst2", 12, 2]]);
  const first = readFileSync(out, "utf8");
  assert.equal(tasktune("eval", "--model", path.join(ROOT, "models", "tiny-llama"), "--tasks", `${digits},sst2`, "--limit", "12", "--fewshot", "2", "--out", out).status, 0);
  assert.equal(readFileSync(out, "utf8"), first, "byte-identical results on a rerun");
});

test("tasktune eval --compare writes report.html with the comparison and both models' tables", () => {
  const report = path.join(scratch, "compare", "report.html");
  const out = path.join(scratch, "compare", "results.json");
  const run = tasktune("eval", "--compare", path.join(FIXTURES, "llama-tiny"), path.join(FIXTURES, "llama-tiny-lora-copy"),
    "--tasks", `${digits},extreme-digit`, "--target", "digits", "--limit", "6", "--report", report, "--out", out);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^task\s+role\s+metric\s+base\s+tuned\s+change\s+n\n/);
  assert.match(run.stdout, /\ndigits\s+target\s+acc\s+0\.\d{4}\s+0\.\d{4}\s+[+-]0\.\d{4}\s+6\n/);
  assert.match(run.stdout, /\nextreme-digit\s+held-out\s+acc\s/);
  assert.match(run.stdout, /target digits \(acc\): 0\.\d{4} → 0\.\d{4}, gain [+-]0\.\d{4}\nheld-out tasks: mean drop [+-]0\.\d{4}/);
  assert.ok(existsSync(report));
  const html = readFileSync(report, "utf8");
  for (const title of ["Forgetting: gain on digits, change on held-out tasks", "Base: ", "Tuned: ", "llama-tiny-lora-copy"]) assert.ok(html.includes(title), title);
  const results = JSON.parse(readFileSync(out, "utf8"));
  assert.deepEqual(results.rows.map((r: { task: string; role: string }) => [r.task, r.role]), [["digits", "target"], ["digits", "target"], ["extreme-digit", "held-out"]]);
  assert.equal(results.tuned.adapter, path.join(FIXTURES, "llama-tiny-lora-copy"));
});

test("tasktune eval names bad options and unknown tasks", () => {
  assert.match(tasktune("eval", "--tasks", "sst2").stderr, /--model is required/);
  assert.match(tasktune("eval", "--model", "m", "--tasks", "sst9").stderr, /unknown task "sst9": not a built-in task \(digit-parity, extreme-digit, gsm8k, is-sorted, kv-recall, sequence-reverse, sst2, sst5, tint-min, tint-sum\)/);
  assert.match(tasktune("eval", "--model", "m", "--tasks", "sst2", "--fewshot", "1.5").stderr, /--fewshot must be an integer ≥ 0, got "1\.5"/);
  assert.match(tasktune("eval", "--compare", "a", "--tasks", "sst2").stderr, /--compare takes two folders/);
  assert.match(tasktune("eval", "--model", "m", "--tasks", "sst2", "--target", "sst2").stderr, /--target and --report go with --compare/);
});
