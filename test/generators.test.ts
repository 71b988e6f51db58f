// The generated task suite (src/data/generators): seeded rows, validated options, TInt traces and
// their static/dynamic noise, the shared kv-recall knowledge base, `tasktune generate`, and the
// bundled data/tasks files of each generated task.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseSyntheticOptions, SYNTHETIC_TASKS, syntheticRows, writeSyntheticTask, type SyntheticRow } from "../src/data/synthetic.ts";
import { compileExtractor } from "../src/eval/metrics.ts";
import { BUILTIN_TASK_DIR, resolveTasks } from "../src/eval/tasks/config.ts";
import { loadDocuments } from "../src/eval/tasks/documents.ts";
import { tempDirs } from "./support/tmp.ts";

const ROOT = path.join(import.meta.dirname, "..");
const BIN = path.join(ROOT, "bin", "tasktune.js");
const tempDir = tempDirs("tasktune-generators");

function tasktune(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });
}

/** The items of a "Label: 1 2 3\n…" prompt, and its trace and shown answer of a TInt completion. */
function parseTint(row: SyntheticRow) {
  const [, label, items] = /^(.+): ([\d ]+)\nTrace:$/.exec(row.prompt as string)!;
  const [, trace, shown] = /^ ([\d ]+)\nAnswer: (\d+)$/.exec(row.completion as string)!;
  return { label, items: items.split(" ").map(Number), trace: trace.split(" ").map(Number), shown: Number(shown) };
}

test("every generator is reproducible from its seed, and another seed gives other rows", () => {
  for (const name of Object.keys(SYNTHETIC_TASKS)) {
    const rows = syntheticRows(name, 40, 7);
    assert.deepEqual(syntheticRows(name, 40, 7), rows, name);
    assert.notDeepEqual(syntheticRows(name, 40, 8), rows, name);
    assert.deepEqual(syntheticRows(name, 10, 7), rows.slice(0, 10), `${name}: a shorter file is a prefix`);
    const task = SYNTHETIC_TASKS[name];
    if (task.choices) for (const row of rows) assert.ok(task.choices.includes(row.completion as string), `${name}: ${row.completion}`);
  }
  const dir = tempDir();
  const a = writeSyntheticTask("tint", path.join(dir, "a.jsonl"), 100, 3, { noise: { kind: "dynamic" } });
  const b = writeSyntheticTask("tint", path.join(dir, "b.jsonl"), 100, 3, { noise: { kind: "dynamic" } });
  assert.equal(readFileSync(a, "utf8"), readFileSync(b, "utf8"));
});

test("options: defaults for every key; unknown keys, wrong values and inconsistent ranges are errors naming the key", () => {
  assert.deepEqual(parseSyntheticOptions("extreme-digit"), { min_length: 4, max_length: 8 });
  assert.deepEqual(parseSyntheticOptions("tint", { noise: { kind: "static" } }), {
    fn: "sum", modulus: 10, min_length: 4, max_length: 8, min_value: 0, max_value: 9, noise: { kind: "static", rate: 0.5, intensity: 0.2 },
  });
  assert.throws(() => parseSyntheticOptions("tint", { noise_rate: 0.1 }), /^Error: tint: noise_rate: unknown option$/);
  assert.throws(() => parseSyntheticOptions("tint", { noise: { kind: "static", rat: 0.1 } }), /^Error: tint: noise\.rat: unknown option$/);
  assert.throws(() => parseSyntheticOptions("tint", { noise: { kind: "sometimes" } }), /tint: noise\.kind: Invalid option: expected one of "none"\|"static"\|"dynamic"/);
  assert.throws(() => parseSyntheticOptions("tint", { noise: { rate: 1.5 } }), /tint: noise\.rate: Too big/);
  assert.throws(() => parseSyntheticOptions("sequence", { min_length: 6, max_length: 5 }), /sequence: max_length: must be at least min_length/);
  assert.throws(() => parseSyntheticOptions("tint", { min_value: 3, max_value: 3 }), /tint: max_value: must be above min_value/);
  assert.throws(() => parseSyntheticOptions("kv-recall", { facts: "many" }), /kv-recall: facts: Invalid input: expected number/);
  assert.throws(() => syntheticRows("tint-sum", 1, 1), /unknown synthetic task "tint-sum" \(known: extreme-digit, digit-parity, is-sorted, sequence, tint, kv-recall\)/);
});

test("TInt: clean traces are each function's running value, and the answer is the last step", () => {
  const reference: Record<string, (items: number[], label: string) => number[]> = {
    sum: (items) => items.map((_, i) => items.slice(0, i + 1).reduce((a, b) => a + b) % 7),
    product: (items) => items.map((_, i) => items.slice(0, i + 1).reduce((a, b) => a * b) % 7),
    max: (items) => items.map((_, i) => Math.max(...items.slice(0, i + 1))),
    min: (items) => items.map((_, i) => Math.min(...items.slice(0, i + 1))),
    count: (items, label) => items.map((_, i) => items.slice(0, i + 1).filter((x) => x === Number(label.split(" ")[1])).length),
  };
  for (const [fn, expected] of Object.entries(reference)) {
    const rows = syntheticRows("tint", 200, 5, { fn, modulus: 7, min_length: 2, max_length: 6, min_value: 1, max_value: 12 });
    for (const row of rows) {
      const { label, items, trace, shown } = parseTint(row);
      assert.deepEqual(trace, expected(items, label), `${fn}: ${row.prompt}`);
      assert.equal(shown, trace.at(-1));
      assert.equal(row.answer, shown);
      assert.ok(items.length >= 2 && items.length <= 6 && items.every((x) => x >= 1 && x <= 12));
      assert.equal(row.noised, undefined, "clean rows carry no noise fields");
    }
    assert.equal(parseTint(rows[0]).label, { sum: "Sum mod 7", product: "Product mod 7", max: "Max", min: "Min", count: parseTint(rows[0]).label }[fn]);
  }
  // counting looks for one of the list's own items
  for (const row of syntheticRows("tint", 50, 1, { fn: "count" })) {
    const { label, items } = parseTint(row);
    assert.ok(items.includes(Number(label.slice("Count ".length))), row.prompt as string);
  }
  assert.deepEqual(syntheticRows("tint", 1, 1)[0], { prompt: "Sum mod 10: 0 5 9 9 2 6 7\nTrace:", completion: " 0 5 4 3 5 1 8\nAnswer: 8", answer: 8 });
});

test("TInt noise: static errors stay local and the answer right; dynamic errors carry into later steps and the answer", () => {
  const noisy = (kind: string) => syntheticRows("tint", 300, 11, { noise: { kind, rate: 1, intensity: 0.3 } });
  const clean = syntheticRows("tint", 300, 11);
  const [statics, dynamics] = [noisy("static"), noisy("dynamic")];
  let propagated = 0;
  clean.forEach((cleanRow, r) => {
    const c = parseTint(cleanRow);
    const s = parseTint(statics[r]);
    const d = parseTint(dynamics[r]);
    // one seed: the same lists, and the same steps corrupted, clean or noised
    assert.equal(statics[r].prompt, cleanRow.prompt);
    assert.equal(dynamics[r].prompt, cleanRow.prompt);
    assert.deepEqual(statics[r].corrupted, dynamics[r].corrupted);
    assert.equal(statics[r].answer, c.shown, "the recorded answer is the right one");
    assert.equal(dynamics[r].answer, c.shown, "the recorded answer is the right one");
    const corrupted = new Set(statics[r].corrupted as number[]);
    // static: exactly the corrupted steps differ from the clean trace; the answer line is the clean one
    assert.deepEqual(s.trace.map((v, i) => v !== c.trace[i]), s.trace.map((_, i) => corrupted.has(i)), statics[r].completion as string);
    assert.equal(s.shown, c.shown);
    // dynamic: every step follows from the printed step before it, except the corrupted ones
    d.trace.forEach((v, i) => {
      const followed = ((i === 0 ? 0 : d.trace[i - 1]) + d.items[i]) % 10;
      assert.equal(v !== followed, corrupted.has(i), `${dynamics[r].completion} step ${i}`);
    });
    assert.equal(d.shown, d.trace.at(-1));
    // a running sum never recovers from one wrong step: every later step and the answer are off by as much
    if (corrupted.size === 1) {
      const [first] = corrupted;
      assert.ok(d.trace.every((v, i) => (i < first ? v === c.trace[i] : v !== c.trace[i])), dynamics[r].completion as string);
      propagated++;
    }
  });
  assert.ok(propagated > 50, `${propagated} rows with one corrupted step`);
  // one row worked by hand: 5 6 5 8 5 0 sums to 5 1 6 4 9 9, and steps 3 and 4 are corrupted. Static
  // prints 1 and 3 there and goes on with the clean 9; dynamic computes on from them: (1+5) becomes
  // 3 again by corruption, then 3+0 = 3 is the answer.
  assert.deepEqual([clean[0], statics[0], dynamics[0]].map((row) => [row.prompt, row.completion, row.corrupted]), [
    ["Sum mod 10: 5 6 5 8 5 0\nTrace:", " 5 1 6 4 9 9\nAnswer: 9", undefined],
    ["Sum mod 10: 5 6 5 8 5 0\nTrace:", " 5 1 6 1 3 9\nAnswer: 9", [3, 4]],
    ["Sum mod 10: 5 6 5 8 5 0\nTrace:", " 5 1 6 1 3 3\nAnswer: 3", [3, 4]],
  ]);
});

test("TInt noise: contamination rate and per-step intensity hold over 2000 rows", () => {
  const rows = syntheticRows("tint", 2000, 21, { noise: { kind: "static", rate: 0.3, intensity: 0.2 } });
  const clean = syntheticRows("tint", 2000, 21);
  const noised = rows.filter((row) => row.noised);
  assert.ok(Math.abs(noised.length / rows.length - 0.3) < 0.04, `contamination ${noised.length / rows.length}`);
  const steps = noised.reduce((n, row) => n + parseTint(row).trace.length, 0);
  const corrupted = noised.reduce((n, row) => n + (row.corrupted as number[]).length, 0);
  assert.ok(Math.abs(corrupted / steps - 0.2) < 0.03, `intensity ${corrupted / steps}`);
  rows.forEach((row, r) => {
    if (row.noised) return;
    assert.deepEqual(row.corrupted, []);
    assert.equal(row.completion, clean[r].completion, "an uncontaminated row is the clean row");
  });
  // a higher rate contaminates a superset of the rows
  const more = syntheticRows("tint", 2000, 21, { noise: { kind: "static", rate: 0.6, intensity: 0.2 } });
  assert.ok(rows.every((row, r) => !row.noised || more[r].noised));
});

test("kv-recall: the facts depend on kb_seed only, and N rows hold every fact once", () => {
  const facts = (seed: number, kb_seed = 1) => syntheticRows("kv-recall", 100, seed, { format: "fact", kb_seed }).map((row) => row.text as string);
  const known = new Map(facts(1).map((text) => {
    const [, key, value] = /^The code of ([a-z]+) is (\d)\.$/.exec(text)!;
    return [key, value];
  }));
  assert.equal(known.size, 100, "every fact once");
  assert.deepEqual([...facts(2)].sort(), [...facts(1)].sort(), "another row seed: the same facts, in another order");
  assert.notDeepEqual(facts(2), facts(1));
  for (const seed of [3, 4]) {
    for (const row of syntheticRows("kv-recall", 250, seed)) {
      const key = /^The code of ([a-z]+) is$/.exec(row.prompt as string)![1];
      assert.equal(row.completion, ` ${known.get(key)}`, `seed ${seed}: ${key}`);
    }
  }
  const other = new Set(facts(1, 2));
  assert.ok([...known].filter(([key, value]) => other.has(`The code of ${key} is ${value}.`)).length < 10, "another kb_seed: another knowledge base");
  assert.equal(new Set(syntheticRows("kv-recall", 1000, 1, { facts: 1000 }).map((row) => row.prompt)).size, 1000);
});

test("sequence and classification rows have the right answers", () => {
  const list = (prompt: string) => prompt.split("\n")[0].split(": ")[1].split(" ");
  for (const [op, apply] of [["copy", (x: string[]) => x], ["reverse", (x: string[]) => [...x].reverse()], ["sort", (x: string[]) => [...x].sort()]] as const) {
    for (const alphabet of ["digits", "letters"]) {
      for (const row of syntheticRows("sequence", 50, 2, { op, alphabet })) {
        const items = list(row.prompt as string);
        assert.match(row.prompt as string, alphabet === "digits" ? /^Digits: [0-9]( [0-9])*\n/ : /^Letters: [a-z]( [a-z])*\n/);
        assert.equal(row.completion, ` ${apply(items).join(" ")}`);
      }
    }
  }
  const parity = syntheticRows("digit-parity", 200, 3);
  for (const row of parity) assert.equal(row.completion, list(row.prompt as string).reduce((s, d) => s + Number(d), 0) % 2 ? " odd" : " even");
  const sorted = syntheticRows("is-sorted", 1000, 3, { min_length: 2, max_length: 3, sorted_fraction: 0.25 });
  for (const row of sorted) {
    const digits = list(row.prompt as string).map(Number);
    assert.equal(row.completion, digits.every((d, i) => i === 0 || digits[i - 1] <= d) ? " yes" : " no", row.prompt as string);
  }
  const yes = sorted.filter((row) => row.completion === " yes").length / sorted.length;
  assert.ok(Math.abs(yes - 0.25) < 0.05, `sorted fraction ${yes}`);
});

test("tasktune generate writes what writeSyntheticTask writes, lists the generators, and names bad options", () => {
  const dir = tempDir();
  const out = path.join(dir, "noisy.jsonl");
  const run = tasktune("generate", "tint", "--count", "50", "--seed", "9", "--out", out, "--set", "fn=max", "--set", "noise.kind=dynamic", "--set", "noise.rate=0.25");
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /noisy\.jsonl: 50 rows of tint, seed 9, options \{"fn":"max",.*"noise":\{"kind":"dynamic","rate":0.25,"intensity":0.2\}\}/);
  const expected = writeSyntheticTask("tint", path.join(dir, "expected.jsonl"), 50, 9, { fn: "max", noise: { kind: "dynamic", rate: 0.25 } });
  assert.equal(readFileSync(out, "utf8"), readFileSync(expected, "utf8"));

  const list = tasktune("generate", "--list");
  assert.equal(list.status, 0, list.stderr);
  for (const name of Object.keys(SYNTHETIC_TASKS)) assert.match(list.stdout, new RegExp(`^${name}: `, "m"));
  assert.match(list.stdout, /^ {2}noise\.kind=none +\(none \| static \| dynamic\) /m);
  assert.match(list.stdout, /^ {2}choices: " even" " odd"$/m);

  const bad = tasktune("generate", "tint", "--count", "5", "--out", out, "--set", "noise.intensty=0.5");
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /tasktune: error: tint: noise\.intensty: unknown option/);
  assert.match(tasktune("generate", "tint", "--count", "0", "--out", out).stderr, /--count must be an integer ≥ 1, got "0"/);
  assert.match(tasktune("generate", "tint", "--count", "5").stderr, /--out is required/);
});

// The bundled data of each generated task (data/tasks/prepare.ts): held-out set seed 2, demonstrations seed 1.
const BUNDLED = [
  { task: "digit-parity", generator: "digit-parity", rows: 300, options: {} },
  { task: "is-sorted", generator: "is-sorted", rows: 300, options: {} },
  { task: "sequence-reverse", generator: "sequence", rows: 300, options: { op: "reverse" } },
  { task: "tint-sum", generator: "tint", rows: 300, options: { fn: "sum" } },
  { task: "tint-min", generator: "tint", rows: 300, options: { fn: "min" } },
  { task: "kv-recall", generator: "kv-recall", rows: 100, options: {} },
];

test("the generated tasks' bundled data is what the generators write, and their task files load", () => {
  const dir = tempDir();
  const tasks = resolveTasks(BUNDLED.map((b) => b.task).join(","));
  BUNDLED.forEach(({ task, generator, rows, options }, i) => {
    for (const [file, count, seed] of [["test.jsonl", rows, 2], ["train-200.jsonl", 200, 1]] as const) {
      const regenerated = writeSyntheticTask(generator, path.join(dir, task, file), count, seed, options);
      assert.equal(readFileSync(regenerated, "utf8"), readFileSync(path.join(BUILTIN_TASK_DIR, task, file), "utf8"), `${task}/${file}`);
    }
    const config = tasks[i];
    assert.equal(config.task, task);
    const docs = loadDocuments(config, config.data);
    assert.equal(docs.length, rows);
    assert.equal(loadDocuments(config, config.fewshot.source!).length, 200);
    if (config.outputType === "multiple_choice") assert.deepEqual(config.choices, SYNTHETIC_TASKS[generator].choices);
  });
  const facts = writeSyntheticTask("kv-recall", path.join(dir, "facts.jsonl"), 100, 1, { format: "fact" });
  assert.equal(readFileSync(facts, "utf8"), readFileSync(path.join(BUILTIN_TASK_DIR, "kv-recall", "facts.jsonl"), "utf8"));

  // tint-sum: the metric's extraction recovers every test row's answer from its completion; a demonstration shows the whole trace
  const tintSum = tasks[BUNDLED.findIndex((b) => b.task === "tint-sum")];
  const extract = compileExtractor(tintSum.metrics[0].extract!);
  const docs = loadDocuments(tintSum, tintSum.data);
  const rows = syntheticRows("tint", 300, 2);
  docs.forEach((doc, i) => {
    assert.deepEqual(doc.references, [String(rows[i].answer)]);
    assert.equal(extract(`${rows[i].completion}\nSum mod 10: 1 2\nTrace: 1 3\nAnswer: 3`), String(rows[i].answer), "the first answer line counts");
  });
  assert.equal(extract(" 1 2 3"), "[invalid]");
  assert.equal(loadDocuments(tintSum, tintSum.fewshot.source!)[0].demonstration, syntheticRows("tint", 1, 1)[0].completion);
});

test("tasktune eval runs every generated task on the bundled tiny model", () => {
  const out = path.join(tempDir(), "results.json");
  const run = spawnSync(process.execPath, [BIN, "eval", "--model", path.join(ROOT, "models", "tiny-llama"), "--tasks", BUNDLED.map((b) => b.task).join(","),
    "--limit", "3", "--fewshot", "1", "--threads", "1", "--out", out], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  const results = JSON.parse(readFileSync(out, "utf8")) as { tasks: { task: string; n: number; metrics: Record<string, { value: number }> }[] };
  assert.deepEqual(results.tasks.map((t) => [t.task, t.n, Object.keys(t.metrics)]), BUNDLED.map((b) => [b.task, 3, [b.task.startsWith("tint-") || b.task === "sequence-reverse" ? "exact_match" : "acc"]]));
});
