// Task files (validation errors name the key and the file), documents, the built-in tasks and
// their bundled data, and seeded few-shot sampling.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import YAML from "yaml";
import { writeSyntheticTask } from "../src/data/synthetic.ts";
import { FewShotSampler } from "../src/eval/fewshot.ts";
import { BUILTIN_TASK_DIR, builtinTaskNames, loadTask, parseTask, resolveTasks, type TaskConfig } from "../src/eval/tasks/config.ts";
import { goldIndex, loadDocuments } from "../src/eval/tasks/documents.ts";
import { promptParts, renderPrompt } from "../src/eval/tasks/prompts.ts";
import { RowTemplate } from "../src/eval/template.ts";
import { FormatError } from "../src/io/errors.ts";

const scratch = mkdtempSync(path.join(tmpdir(), "tasktune-eval-tasks-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let count = 0;

/** A task folder with data.jsonl (`rows`) and task.yaml (`task`, data defaulting to data.jsonl). */
function taskFile(task: Record<string, unknown>, rows: Record<string, unknown>[] = QA_ROWS): string {
  const dir = path.join(scratch, String(count++));
  mkdirSync(dir);
  writeFileSync(path.join(dir, "data.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const file = path.join(dir, "task.yaml");
  writeFileSync(file, YAML.stringify({ data: "data.jsonl", ...task }));
  return file;
}

const QA_ROWS = Array.from({ length: 8 }, (_, i) => ({ q: `What is ${i} + 1?`, a: String(i + 1), label: i % 2 }));
const MC_TASK = { task: "mc", prompt: "Q: {{ q }}\nA:", output_type: "multiple_choice", choices: ["no", "yes"], target: "label" };

function loadError(task: Record<string, unknown>, rows?: Record<string, unknown>[]): string {
  const file = taskFile(task, rows);
  try {
    const config = loadTask(file);
    loadDocuments(config, config.data);
  } catch (error) {
    assert.ok(error instanceof FormatError, `expected a FormatError, got ${error}`);
    assert.ok(error.message.startsWith(file), `the message names the task file: ${error.message}`);
    return error.message;
  }
  assert.fail("expected an error");
}

test("a task file loads with defaults and paths relative to it", () => {
  const file = taskFile({ ...MC_TASK, fewshot: { k: 2, source: "data.jsonl" } });
  const task = loadTask(file);
  assert.equal(task.data, path.join(path.dirname(file), "data.jsonl"));
  assert.equal(task.fewshot.source, path.join(path.dirname(file), "data.jsonl"));
  assert.deepEqual(task.metrics.map((m) => m.label), ["acc", "acc_norm"], "default metrics of the output type");
  assert.equal(task.targetDelimiter, " ");
  assert.deepEqual({ ...task.fewshot, source: undefined }, { k: 2, seed: 1234, source: undefined, separator: "\n\n" });
  const gen = loadTask(taskFile({ task: "g", prompt: "{{ q }}", output_type: "generate_until", target: "a" }));
  assert.deepEqual(gen.generation.until, ["\n\n"], "generation stops at the few-shot separator by default");
  assert.equal(gen.generation.max_new_tokens, 256);
});

test("task files: unknown keys, wrong types and inconsistent settings are errors naming the key and file", () => {
  assert.match(loadError({ ...MC_TASK, promt: "x" }), /Unrecognized key.*"promt"/);
  assert.match(loadError({ ...MC_TASK, limit: "ten" }), /limit: .*expected number/);
  assert.match(loadError({ ...MC_TASK, fewshot: { k: 1, sed: 3 } }), /fewshot: Unrecognized key.*"sed"/);
  assert.match(loadError({ ...MC_TASK, output_type: "classify" }), /output_type: Invalid option/);
  assert.match(loadError({ ...MC_TASK, choices: undefined }), /choices: required for output_type multiple_choice/);
  assert.match(loadError({ ...MC_TASK, metrics: ["acc", "exact_match"] }), /metrics\.1: exact_match does not apply to output_type multiple_choice \(use acc, acc_norm\)/);
  assert.match(loadError({ ...MC_TASK, metrics: ["bleu"] }), /metrics\.0: Invalid option: expected one of "acc"\|"acc_norm"/);
  assert.match(loadError({ ...MC_TASK, generation: { max_new_tokens: 5 } }), /generation: only for output_type generate_until/);
  const gen = { task: "g", prompt: "{{ q }}", output_type: "generate_until", target: "a" };
  assert.match(loadError({ ...gen, metrics: [{ name: "exact_match", extract: { regex: "(" } }] }), /metrics\.0\.extract: invalid regex "\("/);
  assert.match(loadError({ ...gen, metrics: [{ name: "exact_match", normalize: "upper" }] }), /metrics\.0\.normalize: Invalid option: expected one of "none"/);
  assert.match(loadError({ ...gen, metrics: ["exact_match", { name: "exact_match", extract: "gsm8k" }] }), /metrics: "exact_match" appears twice: give one of them a label/);
  assert.match(loadError({ ...gen, generation: { max_new_tokens: 0 } }), /generation\.max_new_tokens/);
  assert.match(loadError({ ...gen, prompt: "{{ q " }), /prompt: template does not parse/);
  const notYaml = path.join(scratch, "bad.yaml");
  writeFileSync(notYaml, "task: [unclosed\n");
  assert.throws(() => loadTask(notYaml), (e: Error) => e instanceof FormatError && e.message.startsWith(`${notYaml}: invalid YAML`));
  assert.throws(() => loadTask(path.join(scratch, "missing.yaml")), /missing\.yaml: file not found/);
  assert.throws(() => parseTask({ ...MC_TASK, data: "d.jsonl", metrics: "acc" }, "inline"), /^FormatError: inline: metrics: Invalid input: expected array, received string$/);
});

test("rows: missing fields and unusable targets are errors naming the key and the data line", () => {
  assert.match(loadError({ ...MC_TASK, prompt: "Q: {{ question }}" }), /prompt: .*data\.jsonl:1 has no field "question" \(fields: q, a, label\)/);
  assert.match(loadError({ ...MC_TASK, target: "gold" }), /target: .*data\.jsonl:1: no field "gold"/);
  assert.match(loadError(MC_TASK, [{ q: "x", a: "1", label: 0 }, { q: "y", a: "2", label: 5 }]), /target: .*data\.jsonl:2: 5 is neither one of the choices \["no","yes"\] nor an index/);
  assert.match(loadError({ ...MC_TASK, choices: "options" }), /choices: .*no field "options"/);
  assert.match(loadError({ ...MC_TASK, choices: "options" }, [{ q: "x", label: 0, options: ["one"] }]), /choices: .*expected a list of at least 2 strings/);
  assert.match(loadError({ task: "g", prompt: "{{ q }}", output_type: "generate_until", target: "a" }, [{ q: "x", a: { x: 1 } }]), /target: .*expected text/);
  // optional fields are fine behind `is defined` and `default`
  const file = taskFile({ ...MC_TASK, prompt: "{% if hint is defined %}{{ hint }} {% endif %}{{ q }}{{ note | default('') }}" });
  const task = loadTask(file);
  assert.equal(loadDocuments(task, task.data)[0].prompt, "What is 0 + 1?");
});

test("documents: targets by index or text, choices from a field or a template", () => {
  assert.equal(goldIndex(1, ["a", "b"]), 1);
  assert.equal(goldIndex("b", ["a", "b"]), 1);
  assert.equal(goldIndex("1", ["a", "b"]), 1);
  assert.equal(goldIndex(" 1", [" 0", " 1"]), 1, "a choice's text wins over an index");
  assert.equal(goldIndex(2, ["a", "b"]), undefined);
  const rows = [{ q: "2+2", options: ["3", "4", "5"], answer: "4" }, { q: "1+1", options: ["2", "11"], answer: "2" }];
  const byField = loadTask(taskFile({ task: "f", prompt: "{{ q }} =", output_type: "multiple_choice", choices: "options", target: "answer" }, rows));
  const docs = loadDocuments(byField, byField.data);
  assert.deepEqual(docs.map((d) => [d.choices, d.gold, d.references, d.demonstration]), [[["3", "4", "5"], 1, ["4"], "4"], [["2", "11"], 0, ["2"], "2"]]);
  const byTemplate = loadTask(taskFile({
    task: "t", prompt: "{{ q }} =", output_type: "multiple_choice", choices: "{{ options + ['none'] }}", target: "{{ options.index(answer) if false else answer }}",
  }, rows));
  assert.deepEqual(loadDocuments(byTemplate, byTemplate.data)[0].choices, ["3", "4", "5", "none"]);
  const gen = loadTask(taskFile({ task: "g", prompt: "{{ q }}", output_type: "generate_until", target: "{{ answer }}", fewshot: { target: "The answer is {{ answer }}." } }, rows));
  assert.deepEqual(loadDocuments(gen, gen.data, 1).map((d) => [d.references, d.demonstration]), [[["4"], "The answer is 4."]]);
  const multi = loadTask(taskFile({ task: "m", prompt: "{{ q }}", output_type: "generate_until", target: "answers" }, [{ q: "x", answers: ["a", "b"] }]));
  assert.deepEqual(loadDocuments(multi, multi.data)[0].references, ["a", "b"], "a list of references");
});

test("templates: Jinja over row fields, strict about unknown variables", () => {
  const t = new RowTemplate("{{ answer.split('####')[-1].strip() }}", "t.yaml", "target");
  assert.equal(t.render({ answer: "work\n#### 1,234" }, "d.jsonl:1"), "1,234");
  assert.equal(new RowTemplate("{% for c in cs %}{{ loop.index }}. {{ c }}\n{% endfor %}", "x", "y").render({ cs: ["a", "b"] }, "r"), "1. a\n2. b\n");
  assert.throws(() => new RowTemplate("{{ sentense }}", "t.yaml", "prompt").render({ sentence: "s" }, "d.jsonl:7"),
    (e: Error) => e instanceof FormatError && e.message === 't.yaml: prompt: d.jsonl:7 has no field "sentense" (fields: sentence)');
});

test("built-in tasks load, with their bundled data", () => {
  assert.deepEqual(builtinTaskNames(), ["digit-parity", "extreme-digit", "gsm8k", "is-sorted", "kv-recall", "sequence-reverse", "sst2", "sst5", "tint-min", "tint-sum"]);
  const tasks = resolveTasks("sst2,sst5,gsm8k,extreme-digit");
  const sizes = Object.fromEntries(tasks.map((t) => [t.task, loadDocuments(t, t.data).length]));
  assert.deepEqual(sizes, { sst2: 872, sst5: 1101, gsm8k: 200, "extreme-digit": 500 });
  for (const t of tasks) if (t.fewshot.source) assert.ok(loadDocuments(t, t.fewshot.source).length >= 50, t.task);
  const [sst2, sst5, gsm8k] = tasks;
  const first = loadDocuments(sst2, sst2.data, 1)[0];
  assert.equal(first.prompt.slice(0, 8), "Review: ");
  assert.deepEqual([first.choices, first.references], [[" negative", " positive"], [" positive"]]);
  assert.deepEqual(loadDocuments(sst5, sst5.data, 1)[0].references, ["good"], "SST-5 dev row 1 is __label__4");
  const problem = loadDocuments(gsm8k, gsm8k.data, 1)[0];
  assert.deepEqual(problem.references, ["72"]);
  assert.match(problem.demonstration, /^Natalia sold 48\/2 = <<48\/2=24>>24 clips in May\.\n[^]*#### 72$/);
  assert.deepEqual(gsm8k.metrics, [{ name: "exact_match", label: "exact_match", normalize: ["number"], extract: "gsm8k" }]);
  assert.deepEqual(gsm8k.generation.until, ["Question:", "\n\n"]);
  // a task file by path works the same as a name
  assert.equal(resolveTasks(path.join(BUILTIN_TASK_DIR, "sst2.yaml"))[0].data, sst2.data);
  assert.throws(() => resolveTasks("sst3"), /unknown task "sst3": not a built-in task \(digit-parity, extreme-digit, gsm8k, is-sorted, kv-recall, sequence-reverse, sst2, sst5, tint-min, tint-sum\)/);
  assert.throws(() => resolveTasks("sst2,sst2"), /task "sst2" is given twice/);
});

test("the bundled extreme-digit data is what the generator writes", () => {
  const dir = path.join(scratch, "synthetic");
  for (const [file, rows, seed] of [["test.jsonl", 500, 2], ["train-200.jsonl", 200, 1]] as const) {
    const regenerated = writeSyntheticTask("extreme-digit", path.join(dir, file), rows, seed);
    assert.equal(readFileSync(regenerated, "utf8"), readFileSync(path.join(BUILTIN_TASK_DIR, "extreme-digit", file), "utf8"), file);
  }
});

test("few-shot: seeded, per item, never the item itself", () => {
  const pool = Array.from({ length: 50 }, (_, i) => i);
  const sampler = new FewShotSampler(pool, 7, String);
  const draws = Array.from({ length: 20 }, (_, i) => sampler.sample(5, i, i));
  assert.deepEqual(draws, Array.from({ length: 20 }, (_, i) => new FewShotSampler(pool, 7, String).sample(5, i, i)), "same seed, same draws");
  assert.notDeepEqual(draws, Array.from({ length: 20 }, (_, i) => new FewShotSampler(pool, 8, String).sample(5, i, i)), "another seed, other draws");
  draws.forEach((d, i) => {
    assert.equal(new Set(d).size, 5, "without replacement");
    assert.ok(!d.includes(i), "never the item itself");
  });
  // exhaustive on a tiny pool: the two others, in some order
  const tiny = new FewShotSampler([0, 1, 2], 1, String);
  for (let i = 0; i < 3; i++) assert.deepEqual([...tiny.sample(2, i, i)].sort(), [0, 1, 2].filter((x) => x !== i));
  assert.throws(() => tiny.sample(3, 0, 0), /3 examples asked for, but the pool has only 2 besides the item itself/);
  // roughly uniform: every pool entry gets drawn
  const seen = new Set(Array.from({ length: 200 }, (_, i) => sampler.sample(3, i)).flat());
  assert.equal(seen.size, 50);
});

test("few-shot prompts: the same for a given seed whatever the limit, from the task's own rows or a source file", () => {
  const file = taskFile({ ...MC_TASK, description: "Answer.\n\n", fewshot: { k: 2, seed: 3, separator: "\n---\n" } });
  const task: TaskConfig = loadTask(file);
  const all = loadDocuments(task, task.data);
  const some = loadDocuments(task, task.data, 4);
  const parts = promptParts(task, all, undefined, 2, 3);
  assert.deepEqual(parts, promptParts(task, all, undefined, 2, 3));
  const prompt = renderPrompt(parts[0]);
  assert.match(prompt, /^Answer\.\n\nQ: What is \d \+ 1\?\nA: (no|yes)\n---\nQ: What is \d \+ 1\?\nA: (no|yes)\n---\nQ: What is 0 \+ 1\?\nA:$/);
  assert.ok(!prompt.slice(0, prompt.lastIndexOf("---")).includes("What is 0 + 1?"), "the item is not its own demonstration");
  // the demonstrations show the gold choice of their row
  for (const demo of parts[0].demonstrations) {
    const i = Number(/What is (\d)/.exec(demo)![1]);
    assert.ok(demo.endsWith(`A: ${["no", "yes"][i % 2]}`), demo);
  }
  // the pool is all rows (of the task or its source file) whatever the limit, so the first items' prompts ignore it
  assert.deepEqual(promptParts(task, some, all, 2, 3), parts.slice(0, 4));
  assert.equal(renderPrompt(parts[0], 1), `Answer.\n\n${parts[0].demonstrations[1]}\n---\nQ: What is 0 + 1?\nA:`, "shrinking drops the earliest demonstration");
  assert.equal(renderPrompt(parts[0], 0), "Answer.\n\nQ: What is 0 + 1?\nA:");
});
