// tasktune compare: a small comparison end to end (compare.json, the table, report.html with the
// scatter, reruns that keep finished runs), suite validation, and the seed statistics.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { loadSuite, summarizeRuns, type RunResult, type SuiteYaml } from "../src/train/compare.ts";
import { tempDirs } from "./support/tmp.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");
const tempDir = tempDirs("tasktune-compare");

/** A suite file in a fresh folder; its paths are relative to it, as a user's would be. */
function writeSuite(edit: (suite: SuiteYaml) => void = () => {}): string {
  const dir = tempDir();
  const suite: SuiteYaml = {
    base: path.relative(dir, path.join(ROOT, "models", "tiny-llama")),
    train: {
      data: { train: path.relative(dir, path.join(ROOT, "data", "tasks", "extreme-digit", "train-200.jsonl")) },
      train: { steps: 8, batch_size: 8, seq_len: 32, lr: 5e-3 },
    },
    methods: [{ name: "full", method: "full", train: { lr: 1e-3 } }, { name: "lora", method: "lora", lora: { r: 4, alpha: 8, dropout: 0 } }],
    seeds: [3],
    eval: { target: "extreme-digit", held_out: ["sst2"], limit: 12 },
    output_dir: "out",
  };
  edit(suite);
  const file = path.join(dir, "suite.yaml");
  writeFileSync(file, YAML.stringify(suite));
  return file;
}

// One ggml thread: on a shared machine a second one mostly waits at barriers.
function compare(file: string) {
  return spawnSync(process.execPath, [BIN, "compare", file, "--threads", "1"], { encoding: "utf8" });
}

test("tasktune compare trains, scores and tabulates each method, and a rerun keeps finished runs", () => {
  const file = writeSuite();
  const out = path.join(path.dirname(file), "out");
  const run = compare(file);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stderr, /full-seed3: training \(full, seed 3\)/);
  assert.match(run.stdout, /\nmethod\s+seeds\s+target gain \(extreme-digit\)\s+held-out drop\s+trainable params\s+wall s\s+peak RSS MB\s+final loss\n/);
  assert.match(run.stdout, /\nfull\s+1\s+[+-]\d\.\d{4}\s+[+-]\d\.\d{4}\s+156,480\s+\d+\.\d\s+\d+\s+\d\.\d{4}\n/);
  assert.match(run.stdout, /\nlora\s+1\s+[+-]\d\.\d{4}\s+[+-]\d\.\d{4}\s+\d{1,2},\d{3}\s+/);
  assert.match(run.stdout, /base .*tiny-llama: extreme-digit acc 0\.\d{4}, sst2 acc 0\.\d{4} \(12 items per task\)/);
  assert.match(run.stdout, /one seed per method: no spread/);

  const comparison = JSON.parse(readFileSync(path.join(out, "compare.json"), "utf8"));
  assert.equal(comparison.target, "extreme-digit");
  assert.deepEqual(comparison.held_out, ["sst2"]);
  assert.equal(comparison.spread, "none (one seed)");
  assert.deepEqual(comparison.runs.map((r: RunResult) => [r.method, r.seed, path.relative(out, r.dir)]), [["full", 3, "runs/full-seed3"], ["lora", 3, "runs/lora-seed3"]]);
  for (const r of comparison.runs as RunResult[]) {
    for (const key of ["target_gain", "mean_drop", "final_loss", "wall_s", "peak_rss_mb"] as const) assert.equal(typeof r[key], "number", `${r.method} ${key}`);
    assert.ok(r.wall_s > 0 && r.peak_rss_mb > 0 && r.steps === 8);
    assert.deepEqual(r.scores.map((s) => [s.task, s.role, s.metric]), [["extreme-digit", "target", "acc"], ["sst2", "held-out", "acc"], ["sst2", "held-out", "acc_norm"]]);
    const target = r.scores[0];
    assert.equal(r.target_gain, target.tuned - target.base);
    assert.equal(r.mean_drop, r.scores[1].base - r.scores[1].tuned);
  }
  const [full, lora] = comparison.methods;
  assert.equal(full.trainable_params, 156_480);
  assert.ok(lora.trainable_params < full.trainable_params);
  assert.equal(full.target_gain.mean, comparison.runs[0].target_gain);
  assert.equal(full.target_gain.spread, null);

  const html = readFileSync(path.join(out, "report.html"), "utf8");
  for (const text of ['<canvas id="scatter-0">', '"scatters":[{"title":"Learning against forgetting', "Learning and forgetting per method", "Scores per task: base and each method"]) {
    assert.ok(html.includes(text), text);
  }

  // A rerun (say, after a crash) reuses every finished run and score: nothing trains or evaluates again.
  const again = compare(file);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /full-seed3: trained earlier, kept\nlora-seed3: trained earlier, kept\n/);
  assert.doesNotMatch(again.stderr, /training \(|evaluating/);
  assert.deepEqual(JSON.parse(readFileSync(path.join(out, "compare.json"), "utf8")), comparison);

  // A changed suite does not mix with what an earlier one trained.
  writeFileSync(file, readFileSync(file, "utf8").replace("steps: 8", "steps: 9"));
  const changed = compare(file);
  assert.equal(changed.status, 1);
  assert.match(changed.stderr, /full-seed3 holds a finished run of another config/);
});

test("a suite names its file and the bad key, in the suite or in a method's train config", () => {
  const file = writeSuite((s) => Object.assign(s, { seed: 1 }));
  assert.throws(() => loadSuite(file), (err: Error) => err.message.startsWith(`${file}: `) && /Unrecognized key: "seed"/.test(err.message));
  const inMethod = writeSuite((s) => Object.assign(s.methods[1], { lora: { r: 4, rank: 8 } }));
  assert.throws(() => loadSuite(inMethod), (err: Error) => err.message.startsWith(`${inMethod}: methods.1 (lora) over train: `) && /lora: Unrecognized key: "rank"/.test(err.message));
  const seeded = writeSuite((s) => Object.assign(s.methods[0], { train: { seed: 5 } }));
  assert.throws(() => loadSuite(seeded), /methods\.0\.train\.seed: set for every run by the suite's seeds/);
  const twice = writeSuite((s) => s.methods.push({ name: "full", method: "lora" }));
  assert.throws(() => loadSuite(twice), /methods: method name "full" appears twice/);
  const task = writeSuite((s) => (s.eval.held_out = ["sst9"]));
  assert.throws(() => loadSuite(task), /eval: unknown task "sst9"/);
});

test("a suite's paths resolve against its folder, and every method merges over the shared train keys", () => {
  const file = writeSuite((s) => (s.seeds = [1, 2]));
  const suite = loadSuite(file);
  assert.equal(suite.base, path.join(ROOT, "models", "tiny-llama"));
  assert.deepEqual(suite.runs.map((r) => [r.method, r.seed, r.config.train.seed, r.config.train.lr, r.config.train.steps]),
    [["full", 1, 1, 1e-3, 8], ["lora", 1, 1, 5e-3, 8], ["full", 2, 2, 1e-3, 8], ["lora", 2, 2, 5e-3, 8]]);
  assert.equal(suite.runs[1].config.data.train, path.join(ROOT, "data", "tasks", "extreme-digit", "train-200.jsonl"));
  assert.equal(suite.runs[1].config.lora.r, 4);
  assert.equal(suite.runs[3].config.output_dir, path.join(path.dirname(file), "out", "runs", "lora-seed2"));
  assert.deepEqual(suite.tasks.map((t) => t.task), ["extreme-digit", "sst2"]);
});

test("seed statistics: min to max with two seeds, sample std from three, and differences within the spread", () => {
  const run = (method: string, seed: number, gain: number, drop: number): RunResult => ({
    method, seed, dir: `${method}-${seed}`, target_gain: gain, mean_drop: drop, final_loss: 0.5, wall_s: 10, peak_rss_mb: 100, trainable_params: 10, steps: 1, scores: [],
  });
  const two = summarizeRuns([run("a", 1, 0.40, 0.10), run("b", 1, 0.30, 0.02), run("a", 2, 0.44, 0.12), run("b", 2, 0.50, 0.04)], ["a", "b"], 2);
  assert.equal(two.spread, "max - min");
  assert.deepEqual(two.methods.map((m) => [m.target_gain.min, m.target_gain.max]), [[0.40, 0.44], [0.30, 0.50]]);
  assert.ok(Math.abs(two.methods[1].target_gain.spread! - 0.2) < 1e-12);
  // Gains 0.42 and 0.40 differ by less than b's spread (0.2); drops 0.11 and 0.03 by more than either spread (0.02).
  assert.deepEqual(two.notes, ["b vs a: target gain difference 0.0200 is within the seed spread (max - min 0.2000)"]);

  const three = summarizeRuns([1, 2, 3].map((seed) => run("a", seed, seed / 10, 0)), ["a"], 3);
  assert.equal(three.spread, "sample std");
  assert.ok(Math.abs(three.methods[0].target_gain.spread! - 0.1) < 1e-12);
});
