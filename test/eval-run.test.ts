// End-to-end evaluation of a tiny model on small task files: numbers reproducible to the bit,
// multiple choice equal to scoring each choice by hand, generations equal to the generator's,
// few-shot prompts fitted to the context, and the base-vs-tuned comparison.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import YAML from "yaml";
import { compareResults, evaluateForgetting, forgettingTables } from "../src/eval/forgetting.ts";
import { Generator } from "../src/eval/generate.ts";
import { LogLikelihoodScorer, multipleChoiceAccuracy } from "../src/eval/loglikelihood.ts";
import { exactMatch, multipleChoiceScores } from "../src/eval/metrics.ts";
import { evaluateCheckpoint, evaluateTasks, formatResultsTable, type EvalResults } from "../src/eval/run.ts";
import { BUILTIN_TASK_DIR, loadTask, resolveTasks, type TaskConfig } from "../src/eval/tasks/config.ts";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { loadModel } from "../src/models/index.ts";
import { Backend } from "../src/engine/backend.ts";

const ROOT = path.join(import.meta.dirname, "..");
const MODEL = path.join(ROOT, "models", "tiny-llama");
const FIXTURES = path.join(ROOT, "test", "fixtures", "hf");
const DIGITS = path.join(BUILTIN_TASK_DIR, "extreme-digit");
const SST2_SAMPLE = path.join(ROOT, "test", "fixtures", "data", "sst2-dev-sample.jsonl");

// One thread: these graphs are small, and on a shared machine a second ggml thread mostly waits at barriers.
let backend: Promise<Backend> | undefined;
const testBackend = () => (backend ??= Backend.open({ device: "cpu", threads: 1 }));

const scratch = mkdtempSync(path.join(tmpdir(), "tasktune-eval-run-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function task(name: string, spec: Record<string, unknown>): TaskConfig {
  const dir = path.join(scratch, name);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify({ task: name, ...spec }));
  return loadTask(file);
}

const digits = task("digits", {
  data: path.join(DIGITS, "test.jsonl"), prompt: "{{ prompt }}", output_type: "multiple_choice",
  choices: Array.from({ length: 10 }, (_, d) => ` ${d}`), target: "completion", target_delimiter: "", metrics: ["acc", "acc_norm"],
  fewshot: { k: 0, seed: 5, source: path.join(DIGITS, "train-200.jsonl") }, limit: 24,
});
const sentiment = task("sentiment", {
  data: SST2_SAMPLE, prompt: "{{ prompt }}", output_type: "multiple_choice", choices: [" negative", " positive"],
  target: "completion", target_delimiter: "", limit: 20,
});
const continuation = task("continuation", {
  data: SST2_SAMPLE, prompt: "{{ prompt }}", output_type: "loglikelihood", target: "completion", target_delimiter: "", limit: 10,
});
const answers = task("answers", {
  data: path.join(DIGITS, "test.jsonl"), prompt: "{{ prompt }}", output_type: "generate_until", target: "{{ completion | trim }}",
  metrics: ["exact_match", "f1", { name: "rouge_l", label: "rouge" }, { name: "exact_match", label: "em_last_number", extract: "last_number" }],
  generation: { until: ["\n"], max_new_tokens: 6 }, fewshot: { k: 1, seed: 9, source: path.join(DIGITS, "train-200.jsonl") }, limit: 6,
});

test("multiple choice: reproducible to the bit, and equal to scoring every choice by hand", async () => {
  const backend = await testBackend();
  const tokenizer = Tokenizer.load(MODEL);
  const model = loadModel(backend, MODEL);
  try {
    const first = evaluateTasks(model, tokenizer, [digits, sentiment], { logSamples: true, batchSize: 8 });
    const again = evaluateTasks(model, tokenizer, [digits, sentiment], { logSamples: true, batchSize: 8 });
    assert.deepEqual(again, first, "a second run gives the same numbers");

    // By hand: the 0-shot context is the prompt, each choice a continuation, one scorer (long enough for all) for all.
    const scorer = new LogLikelihoodScorer(model, 4, 128);
    try {
      for (const [config, result] of [[digits, first[0]], [sentiment, first[1]]] as const) {
        const samples = result.samples!;
        const items = samples.map((s) => ({
          context: tokenizer.encode(s.prompt),
          choices: s.choices!.map((c) => tokenizer.encode(c, { addSpecialTokens: false })),
          answer: s.choices!.indexOf(s.references[0]),
        }));
        const byHand = multipleChoiceAccuracy(scorer, items);
        assert.equal(result.metrics.acc.value, byHand.accuracy, config.task);
        assert.deepEqual(samples.map((s) => s.prediction), byHand.predictions);
        const lls = scorer.score(items.flatMap((item) => item.choices.map((continuation) => ({ context: item.context, continuation }))));
        samples.forEach((s, i) => s.logLikelihoods!.forEach((ll, j) => assert.ok(Math.abs(ll - lls[i * s.choices!.length + j]) < 1e-4)));
        const norm = samples.map((s) => multipleChoiceScores(s.logLikelihoods!, s.choices!, s.choices!.indexOf(s.references[0])).acc_norm);
        assert.equal(result.metrics.acc_norm.value, norm.reduce((a, v) => a + v, 0) / norm.length);
      }
    } finally {
      scorer.free();
    }
    // The numbers themselves (tiny-llama is a 156k-parameter model trained on license texts: near chance).
    assert.deepEqual(first.map((r) => [r.task, r.n, r.fewshot, r.metrics.acc.value, r.metrics.acc_norm.value]), [
      ["digits", 24, 0, GOLDEN.digits.acc / 24, GOLDEN.digits.acc_norm / 24],
      ["sentiment", 20, 0, GOLDEN.sentiment.acc / 20, GOLDEN.sentiment.acc_norm / 20],
    ]);
    assert.match(formatResultsTable(first), /^task\s+metric\s+value\s+stderr\s+n\s+shots\n[- ]+\ndigits\s+acc\s+0\.\d{4}\s+± 0\.\d{4}\s+24\s+0\n/);
  } finally {
    model.free();
  }
});

/** Correct answers of tiny-llama on the first items (counts, so that they read exactly). */
const GOLDEN = { digits: { acc: 1, acc_norm: 1 }, sentiment: { acc: 6, acc_norm: 6 } };

test("few-shot: seeded prompts, fitted to the context by dropping the earliest demonstrations", async () => {
  const backend = await testBackend();
  const tokenizer = Tokenizer.load(MODEL);
  const model = loadModel(backend, MODEL);
  try {
    const five = evaluateTasks(model, tokenizer, [digits], { fewshot: 5, logSamples: true });
    assert.deepEqual(evaluateTasks(model, tokenizer, [digits], { fewshot: 5, logSamples: true }), five);
    const prompts = five[0].samples!.map((s) => s.prompt);
    assert.ok(prompts.every((p) => p.split("\n\n").length === 6), "five demonstrations and the question");
    assert.equal(five[0].fewshotReduced, 0);
    const reseeded = evaluateTasks(model, tokenizer, [digits], { fewshot: 5, seed: 6, logSamples: true });
    assert.notDeepEqual(reseeded[0].samples!.map((s) => s.prompt), prompts, "another seed draws other demonstrations");
    // With 48 positions only, demonstrations are dropped until prompt and answer fit.
    const short = evaluateTasks(model, tokenizer, [digits], { fewshot: 5, maxLength: 48, logSamples: true });
    assert.equal(short[0].fewshotReduced, 24);
    assert.equal(short[0].truncated, 0);
    short[0].samples!.forEach((s, i) => {
      assert.ok(tokenizer.encode(s.prompt).length + 2 <= 48);
      assert.ok(prompts[i].endsWith(s.prompt), "the kept demonstrations are the last ones");
    });
  } finally {
    model.free();
  }
});

test("log-likelihood and generation tasks", async () => {
  const backend = await testBackend();
  const tokenizer = Tokenizer.load(MODEL);
  const model = loadModel(backend, MODEL);
  try {
    const [ll, gen] = evaluateTasks(model, tokenizer, [continuation, answers], { logSamples: true, batchSize: 4 });
    const lls = ll.samples!.map((s) => s.logLikelihoods![0]);
    assert.ok(Math.abs(ll.metrics.loglikelihood.value - lls.reduce((a, v) => a + v, 0) / lls.length) < 1e-9);
    const tokens = ll.samples!.map((s) => tokenizer.encode(s.references[0], { addSpecialTokens: false }).length);
    const expected = Math.exp(-lls.reduce((a, v) => a + v, 0) / tokens.reduce((a, v) => a + v, 0));
    assert.ok(Math.abs(ll.metrics.perplexity.value - expected) < 1e-9 * expected);
    assert.equal(ll.metrics.perplexity.stderr, null);
    assert.ok(ll.metrics.bits_per_byte.value > 0);

    // The generations are the generator's own for the same prompts (one demonstration each).
    const samples = gen.samples!;
    assert.ok(samples.every((s) => s.prompt.split("\n\n").length === 2));
    const generator = new Generator(model, tokenizer, { batchSize: 4, maxLength: 256 });
    try {
      const direct = generator.generate(samples.map((s) => s.prompt), { maxNewTokens: 6, stop: ["\n"] });
      assert.deepEqual(samples.map((s) => s.prediction), direct.map((g) => g.text));
    } finally {
      generator.free();
    }
    const em = samples.map((s) => exactMatch(s.prediction as string, s.references));
    assert.equal(gen.metrics.exact_match.value, em.reduce((a, v) => a + v, 0) / em.length);
    assert.deepEqual(Object.keys(gen.metrics), ["exact_match", "f1", "rouge", "em_last_number"]);
    assert.deepEqual(evaluateTasks(model, tokenizer, [answers], { batchSize: 4 })[0].metrics, gen.metrics, "reproducible");
  } finally {
    model.free();
  }
});

test("gsm8k: demonstrations dropped, then the generation budget and finally the question cut to fit the context", async () => {
  const backend = await testBackend();
  const tokenizer = Tokenizer.load(MODEL);
  const model = loadModel(backend, MODEL);
  try {
    const gsm8k = resolveTasks("gsm8k");
    const [fits] = evaluateTasks(model, tokenizer, gsm8k, { limit: 2, logSamples: true });
    // 5 worked answers never fit 256 positions with a 256-token budget: no demonstrations, and what the question leaves.
    assert.deepEqual([fits.n, fits.fewshot, fits.meanShots, fits.fewshotReduced, fits.truncated], [2, 5, 0, 2, 2]);
    assert.deepEqual(fits.samples!.map((s) => s.references), [["72"], ["10"]]);
    assert.ok(fits.samples!.every((s) => (s.prompt as string).startsWith("Question: ") && !(s.prediction as string).includes("Question:")));
    const [cut] = evaluateTasks(model, tokenizer, gsm8k, { limit: 2, maxLength: 40, logSamples: true });
    // 40 positions: the question keeps its last 30 tokens and 10 are left to answer in.
    for (const s of cut.samples!) {
      assert.ok(tokenizer.encode(s.prompt).length <= 30, s.prompt);
      assert.ok(s.prompt.endsWith("\nAnswer:"));
      assert.ok(tokenizer.encode(s.prediction as string, { addSpecialTokens: false }).length <= 10);
    }
    assert.equal(cut.truncated, 2);
  } finally {
    model.free();
  }
});

test("forgetting: base and tuned (adapter or model folder) on the same prompts; gain on the target, drop elsewhere", async () => {
  const backend = await testBackend();
  const base = path.join(FIXTURES, "llama-tiny");
  const options = { fewshot: 2, limit: 8 };
  const viaAdapter = evaluateForgetting(backend, { base, tuned: path.join(FIXTURES, "llama-tiny-lora-copy"), tasks: [digits, sentiment], target: "digits", options });
  // The same, assembled by hand: the base, then the base with the adapter applied.
  const baseResults = evaluateCheckpoint(backend, { model: base }, [digits, sentiment], options);
  const tunedResults = evaluateCheckpoint(backend, { model: base, adapter: path.join(FIXTURES, "llama-tiny-lora-copy") }, [digits, sentiment], options);
  assert.deepEqual(viaAdapter.base, baseResults);
  assert.deepEqual(viaAdapter.tuned, tunedResults);
  assert.deepEqual(viaAdapter, compareResults(baseResults, tunedResults, { target: "digits" }));
  for (const row of viaAdapter.rows) {
    const b = baseResults.tasks.find((t) => t.task === row.task)!.metrics[row.metric].value;
    const t = tunedResults.tasks.find((r) => r.task === row.task)!.metrics[row.metric].value;
    assert.deepEqual([row.base, row.tuned, row.delta, row.role], [b, t, t - b, row.task === "digits" ? "target" : "held-out"]);
  }
  assert.equal(viaAdapter.targetGain, viaAdapter.rows[0].delta);
  assert.equal(viaAdapter.meanDrop, -viaAdapter.rows.find((r) => r.task === "sentiment" && r.metric === "acc")!.delta);

  // A full fine-tune folder without tokenizer files is scored with the base's tokenizer.
  const viaModel = evaluateForgetting(backend, { base, tuned: path.join(FIXTURES, "llama-tiny-ft-copy"), tasks: [sentiment], options });
  assert.equal(viaModel.tuned.model, path.join(FIXTURES, "llama-tiny-ft-copy"));
  assert.equal(viaModel.target, undefined);
  assert.deepEqual(viaModel.base.tasks, baseResults.tasks.slice(1));

  // A GGUF of the same weights (converted by llama.cpp's own script) scores the same, with its own tokenizer.
  const gguf = evaluateCheckpoint(backend, { model: path.join(ROOT, "test", "fixtures", "gguf", "llama-tiny-f32.gguf") }, [digits, sentiment], options);
  assert.deepEqual(gguf.tasks.map((t) => t.metrics.acc.value), baseResults.tasks.map((t) => t.metrics.acc.value));

  const tables = forgettingTables(viaAdapter);
  assert.deepEqual(tables.map((t) => t.rows.length), [4, 4, 4]);
  assert.equal(tables[0].title, "Forgetting: gain on digits, change on held-out tasks");

  const mismatched: EvalResults = { ...tunedResults, tasks: tunedResults.tasks.map((t) => ({ ...t, fewshot: 3 })) };
  assert.throws(() => compareResults(baseResults, mismatched), /task digits: base and tuned were evaluated differently \(n 8\/8, 2\/3-shot/);
  assert.throws(() => compareResults(baseResults, tunedResults, { target: "gsm8k" }), /--target gsm8k is not one of the evaluated tasks \(digits, sentiment\)/);
});
