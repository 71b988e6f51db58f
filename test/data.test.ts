import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "../src/io/tokenizer.ts";
import { FormatError } from "../src/io/errors.ts";
import { IGNORE_INDEX } from "../src/models/model.ts";
import { loadModel } from "../src/models/index.ts";
import { RowError } from "../src/data/errors.ts";
import { readRows } from "../src/data/records.ts";
import { encodeRows, type Example } from "../src/data/examples.ts";
import { BatchSchedule, batchStream, batchingTokenIds, evalBatches, truncatedCount, type ScheduleOptions, type TrainingBatch } from "../src/data/batches.ts";
import { holdOut } from "../src/data/split.ts";
import { loadDataset } from "../src/data/dataset.ts";
import { shuffledIndices } from "../src/data/shuffle.ts";
import { testBackend } from "./support/backend.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const DATA = join(FIXTURES, "data");
const LLAMA_DIR = join(FIXTURES, "hf/llama-tiny");
const tokenizer = Tokenizer.load(LLAMA_DIR);
const tokenizerJson = JSON.parse(readFileSync(join(LLAMA_DIR, "tokenizer.json"), "utf8")) as Record<string, unknown>;
const EOS = 0;
const PAD = 1;

const scratch = mkdtempSync(join(tmpdir(), "tasktune-data-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let scratchFiles = 0;

/** Writes `content` to a fresh file named `name` and returns its path. */
function scratchFile(name: string, content: string): string {
  const dir = join(scratch, String(scratchFiles++));
  mkdirSync(dir);
  writeFileSync(join(dir, name), content);
  return join(dir, name);
}

/** A tokenizer directory: llama-tiny's tokenizer.json with `changes`, and `config` as tokenizer_config.json. */
function tokenizerWith(changes: Record<string, unknown>, config: Record<string, unknown>): Tokenizer {
  const dir = join(scratch, String(scratchFiles++));
  mkdirSync(dir);
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ ...tokenizerJson, ...changes }));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return Tokenizer.load(dir);
}

const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const chatTokenizer = tokenizerWith(
  {
    added_tokens: [
      ...(tokenizerJson.added_tokens as object[]),
      { id: 512, content: "<|im_start|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 513, content: "<|im_end|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
  },
  { eos_token: "<|im_end|>", pad_token: "<pad>", chat_template: CHATML_TEMPLATE },
);

function assertRowError(run: () => unknown, file: string, line: number, fragment: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof RowError, `expected RowError, got ${String(error)}`);
    assert.ok(error instanceof FormatError);
    assert.equal(error.file, file);
    assert.equal(error.line, line);
    assert.ok(error.message.startsWith(`${file}:${line}: `), error.message);
    assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
    return true;
  });
}

function encodeFile(file: string, using = tokenizer) {
  return encodeRows(file, readRows(file), using);
}

const plain = (text: string, using = tokenizer) => using.encode(text, { addSpecialTokens: false });
const ignored = (n: number) => new Array<number>(n).fill(IGNORE_INDEX);

// --- reading rows ---

test("JSONL rows keep their line numbers; blank lines are skipped", () => {
  const rows = readRows(join(DATA, "text.jsonl"));
  assert.deepEqual(rows.map((row) => row.line), [1, 2, 4, 5]);
  assert.deepEqual(rows[2].values, { text: "Licensed under the Apache License, Version 2.0.", source: "apache" });
  assert.equal(rows[1].values.text, 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.');
});

test("CSV: quoted commas, line breaks and doubled quotes; a record's line is where it starts", () => {
  const rows = readRows(join(DATA, "prompt-completion.csv"));
  assert.deepEqual(rows, [
    { line: 2, values: { id: "1", prompt: "Name the license, briefly:", completion: " MIT" } },
    { line: 3, values: { id: "2", prompt: "Quote the disclaimer:\n", completion: '" AS IS", without warranty' } },
    { line: 5, values: { id: "3", prompt: "Who may use it?", completion: " anyone, for any purpose" } },
  ]);
});

test("CSV: CRLF line ends, a byte order mark, blank lines, empty and quoted-empty fields", () => {
  const file = scratchFile("crlf.csv", '\uFEFFtext,note\r\n"one\r\ntwo",\r\n\r\n"",x\r\nlast,"y"');
  assert.deepEqual(readRows(file), [
    { line: 2, values: { text: "one\r\ntwo", note: "" } },
    { line: 5, values: { text: "", note: "x" } },
    { line: 6, values: { text: "last", note: "y" } },
  ]);
});

test("CSV errors name the file and the line", () => {
  const cases: [string, number, string][] = [
    ['text\nok\n"never closed\n\n', 3, "quoted field is never closed"],
    ['text,note\nok,"two\nlines" "\n', 2, 'unexpected " " after a closing quote'],
    ['text,note\n"two\nlines",say "hi"\n', 2, "quote inside an unquoted field"],
    ["prompt,completion\na,b\nc\n", 3, "row has 1 fields, the header has 2"],
    ["text,text\na,b\n", 1, 'column "text" appears twice'],
  ];
  for (const [content, line, fragment] of cases) {
    const file = scratchFile("bad.csv", content);
    assertRowError(() => readRows(file), file, line, fragment);
  }
});

test("JSONL errors name the file and the line", () => {
  const cases: [string, number, string][] = [
    ['{"text": "a"}\n\n{"text": "b",}\n', 3, "invalid JSON: "],
    ['{"text": "a"}\n["text"]\n', 2, "expected a JSON object, got an array"],
    ['{"text": "a"}\n"text"\n', 2, 'expected a JSON object, got "text"'],
  ];
  for (const [content, line, fragment] of cases) {
    const file = scratchFile("bad.jsonl", content);
    assertRowError(() => readRows(file), file, line, fragment);
  }
});

test("file-level errors: missing, unsupported type, no rows", () => {
  const missing = join(scratch, "missing.jsonl");
  assert.throws(() => readRows(missing), { name: "FormatError", message: `${missing}: file not found` });
  const parquet = scratchFile("train.parquet", "PAR1");
  assert.throws(() => readRows(parquet), { message: `${parquet}: unsupported data file type ".parquet": use .jsonl (one JSON object per line) or .csv` });
  for (const [name, content] of [["empty.jsonl", "\n\n"], ["header-only.csv", "text\n"], ["empty.csv", ""]]) {
    const file = scratchFile(name, content);
    assert.deepEqual(readRows(file), []);
    assert.throws(() => encodeFile(file), { message: `${file}: no rows` });
  }
});

// --- row shapes and labels ---

test("text rows: loss on every token, EOS appended", () => {
  const { shape, examples } = encodeFile(join(DATA, "text.jsonl"));
  assert.equal(shape, "text");
  const text = "Licensed under the Apache License, Version 2.0.";
  assert.deepEqual([...examples[2].ids], [...tokenizer.encode(text), EOS]);
  assert.deepEqual([...examples[2].labels], [...examples[2].ids]);
});

test("prompt/completion rows: prompt tokens ignored, completion and EOS trained, boundary exact", () => {
  const { shape, examples } = encodeFile(join(DATA, "prompt-completion.jsonl"));
  assert.equal(shape, "prompt-completion");
  const prompt = plain("Which license grants permission free of charge?");
  const completion = plain(" The MIT License.");
  assert.deepEqual([...examples[0].ids], [...prompt, ...completion, EOS]);
  assert.deepEqual([...examples[0].labels], [...ignored(prompt.length), ...completion, EOS]);
  const trained = [...examples[1].ids].filter((_, i) => examples[1].labels[i] !== IGNORE_INDEX);
  assert.equal(tokenizer.decode(trained), ' No, it is provided "as is".<|endoftext|>');
});

test("prompt/completion rows from CSV", () => {
  const { shape, examples } = encodeFile(join(DATA, "prompt-completion.csv"));
  assert.equal(shape, "prompt-completion");
  const prompt = plain("Quote the disclaimer:\n");
  const completion = plain('" AS IS", without warranty');
  assert.deepEqual([...examples[1].ids], [...prompt, ...completion, EOS]);
  assert.deepEqual([...examples[1].labels], [...ignored(prompt.length), ...completion, EOS]);
});

test("the post-processor's BOS goes before the prompt, its trailing tokens after the completion", () => {
  const file = join(DATA, "prompt-completion.jsonl");
  const prompt = plain("Which license grants permission free of charge?");
  const completion = plain(" The MIT License.");
  const special = (single: object[]) => ({
    post_processor: { type: "TemplateProcessing", single, pair: single, special_tokens: { "<pad>": { id: "<pad>", ids: [PAD], tokens: ["<pad>"] } } },
  });
  const bos = tokenizerWith(special([{ SpecialToken: { id: "<pad>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }]), { eos_token: "<|endoftext|>" });
  const withBos = encodeFile(file, bos).examples[0];
  assert.deepEqual([...withBos.ids], [PAD, ...prompt, ...completion, EOS]);
  assert.deepEqual([...withBos.labels], [...ignored(1 + prompt.length), ...completion, EOS]);

  // A post-processor that appends EOS itself: it closes the completion, and is not doubled.
  const eosAfter = tokenizerWith(
    { post_processor: { type: "TemplateProcessing", single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|endoftext|>", type_id: 0 } }], pair: [], special_tokens: { "<|endoftext|>": { id: "<|endoftext|>", ids: [EOS], tokens: ["<|endoftext|>"] } } } },
    { eos_token: "<|endoftext|>" },
  );
  const closed = encodeFile(file, eosAfter).examples[0];
  assert.deepEqual([...closed.ids], [...prompt, ...completion, EOS]);
  assert.deepEqual([...closed.labels], [...ignored(prompt.length), ...completion, EOS]);
});

test("chat rows: rendered with the chat template, loss on assistant turns only", () => {
  const { shape, examples } = encodeFile(join(DATA, "chat.jsonl"), chatTokenizer);
  assert.equal(shape, "chat");
  const messages = [
    { role: "system", content: "You answer in one line." },
    { role: "user", content: "Can I sell copies?" },
    { role: "assistant", content: "Yes, subject to the notice." },
    { role: "user", content: "And modify it?" },
    { role: "assistant", content: "Yes." },
  ];
  const { ids, assistantMask } = chatTokenizer.encodeChat(messages);
  assert.deepEqual([...examples[1].ids], ids);
  assert.deepEqual([...examples[1].labels], ids.map((id, i) => (assistantMask[i] ? id : IGNORE_INDEX)));
  // Each trained run is one reply and the marker that closes it.
  const runs: string[] = [];
  let run: number[] = [];
  for (let i = 0; i <= ids.length; i++) {
    if (i < ids.length && examples[1].labels[i] !== IGNORE_INDEX) {
      run.push(ids[i]);
    } else if (run.length > 0) {
      runs.push(chatTokenizer.decode(run));
      run = [];
    }
  }
  assert.deepEqual(runs, ["Yes, subject to the notice.<|im_end|>\n", "Yes.<|im_end|>\n"]);
});

test("row shape errors name the file and the line", () => {
  const cases: [string, number, string][] = [
    ['{"text": "a"}\n{"body": "b"}\n', 2, 'row has no "text", "prompt"/"completion" or "messages" field'],
    ['{"text": "a", "prompt": "b", "completion": "c"}\n', 1, 'row mixes shapes: it has "text" and "prompt"/"completion"'],
    ['{"text": "a"}\n\n{"prompt": "b", "completion": "c"}\n', 3, 'row has "prompt"/"completion", but line 1 has "text"; a file holds one row shape'],
    ['{"prompt": "b"}\n', 1, 'row has "prompt" but no "completion"'],
    ['{"completion": "b", "prompt": null}\n', 1, 'row has "completion" but no "prompt"'],
    ['{"text": 3}\n', 1, 'field "text" must be a string'],
    ['{"prompt": ["b"], "completion": "c"}\n', 1, 'field "prompt" must be a string'],
    ['{"messages": []}\n', 1, 'field "messages" must be a non-empty array'],
    ['{"messages": "hi"}\n', 1, 'field "messages" must be a non-empty array'],
    ['{"messages": [{"role": "user", "content": "a"}, "b"]}\n', 1, "messages[1] must be an object"],
    ['{"messages": [{"role": 1, "content": "a"}]}\n', 1, "messages[0].role must be a string"],
    ['{"messages": [{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]}\n', 1, "messages[0].content must be a string"],
    ['{"messages": [{"role": "user", "content": "a"}]}\n', 1, '"messages" has no "assistant" message to train on'],
  ];
  for (const [content, line, fragment] of cases) {
    const file = scratchFile("bad.jsonl", content);
    assertRowError(() => encodeFile(file, chatTokenizer), file, line, fragment);
  }
});

test("tokenizer failures and rows with nothing to train on are row errors", () => {
  const chat = join(DATA, "chat.jsonl");
  assertRowError(() => encodeFile(chat), chat, 1, "no chat_template");

  const noEos = Tokenizer.load(join(FIXTURES, "hf/tokenizer"));
  const file = scratchFile("empty-completion.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": ""}\n');
  assertRowError(() => encodeFile(file, noEos), file, 2, "row has no tokens to train on");
  const [example] = encodeFile(file, tokenizer).examples.slice(1);
  assert.deepEqual([...example.labels].filter((label) => label !== IGNORE_INDEX), [EOS], "EOS alone is worth training on");
});

// --- batches ---

function example(ids: number[], trainedFrom = 0): Example {
  return { ids: Int32Array.from(ids), labels: Int32Array.from(ids, (id, i) => (i < trainedFrom ? IGNORE_INDEX : id)) };
}

/** Ten examples of lengths 1..10 with distinct ids (100 + 10 * index + position), prompts of 1 token where they have more than one. */
const synthetic = Array.from({ length: 10 }, (_, k) => example(Array.from({ length: k + 1 }, (_, t) => 100 + 10 * k + t), k > 0 ? 1 : 0));
const options = (overrides: Partial<ScheduleOptions> = {}): ScheduleOptions => ({ batchSize: 3, seqLen: 6, mode: "pad", seed: 7, padId: PAD, eosId: EOS, ...overrides });

const rows = ({ batch }: TrainingBatch, of: Int32Array = batch.inputIds) =>
  Array.from({ length: batch.batchSize }, (_, b) => [...of.subarray(b * batch.seqLen, (b + 1) * batch.seqLen)]);

test("pad mode: one example per row, cut on the right, padding masked and ignored", () => {
  const schedule = new BatchSchedule(synthetic, options());
  const first = schedule.batchAt(0);
  assert.equal(first.batch.batchSize, 3);
  assert.equal(first.batch.seqLen, 6);
  const order = shuffledIndices(10, 7);
  rows(first).forEach((row, b) => {
    const source = synthetic[order[b]];
    const kept = Math.min(source.ids.length, 6);
    assert.deepEqual(row, [...source.ids.subarray(0, kept), ...new Array<number>(6 - kept).fill(PAD)]);
    assert.deepEqual(rows(first, first.labels)[b], [...source.labels.subarray(0, kept), ...ignored(6 - kept)]);
    assert.deepEqual(rows(first, first.batch.attentionMask)[b], [...new Array<number>(kept).fill(1), ...new Array<number>(6 - kept).fill(0)]);
  });
  assert.equal(first.tokens, [0, 1, 2].reduce((total, b) => total + Math.min(synthetic[order[b]].ids.length, 6), 0));
  assert.equal(truncatedCount(synthetic, 6, "pad"), 4);
  assert.equal(truncatedCount(synthetic, 6, "pack"), 0);
});

test("pack mode: full rows of the EOS-separated stream, labels alongside, mask all ones", () => {
  const separated = [example([5, 6, EOS]), example([7, 8], 1), example([9], 1)];
  const schedule = new BatchSchedule(separated, options({ mode: "pack", batchSize: 2, seqLen: 4 }));
  assert.equal(schedule.rowsPerEpoch, 8 / 4, "one EOS added after each example that lacks it");
  const order = shuffledIndices(3, 7);
  const stream: number[] = [];
  const streamLabels: number[] = [];
  for (const i of order) {
    const { ids, labels } = separated[i];
    stream.push(...ids);
    streamLabels.push(...labels);
    if (ids.at(-1) !== EOS) {
      stream.push(EOS);
      streamLabels.push(labels.at(-1) === IGNORE_INDEX ? IGNORE_INDEX : EOS);
    }
  }
  const batch = schedule.batchAt(0);
  assert.deepEqual(rows(batch).flat(), stream);
  assert.deepEqual(rows(batch, batch.labels).flat(), streamLabels);
  assert.deepEqual([...batch.batch.attentionMask!], new Array<number>(8).fill(1));
  assert.equal(batch.tokens, 8);
  assert.equal(batch.epoch, 1);

  // The separator is trained only after a trained last token.
  const packedLabels = (source: Example) => [...new BatchSchedule([source], options({ mode: "pack", batchSize: 1, seqLen: 3 })).batchAt(0).labels];
  assert.deepEqual(packedLabels(example([7, 8], 1)), [IGNORE_INDEX, 8, EOS]);
  assert.deepEqual(packedLabels(example([5, 6], 2)), [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]);
});

test("pack mode runs on across epochs, reshuffled with seed + epoch", () => {
  const schedule = new BatchSchedule(synthetic, options({ mode: "pack", batchSize: 2, seqLen: 7 }));
  const tokensPerEpoch = synthetic.reduce((total, e) => total + e.ids.length + 1, 0);
  assert.equal(schedule.rowsPerEpoch, tokensPerEpoch / 7);
  const streamOfEpoch = (epoch: number) => [...shuffledIndices(10, 7 + epoch)].flatMap((i) => [...synthetic[i].ids, EOS]);
  const twoEpochs = [...streamOfEpoch(0), ...streamOfEpoch(1)];
  const steps = Math.floor(twoEpochs.length / 14);
  const batched = Array.from({ length: steps }, (_, step) => rows(schedule.batchAt(step)).flat()).flat();
  assert.deepEqual(batched, twoEpochs.slice(0, steps * 14));
});

test("same seed, same batches; another seed, another order; each epoch reshuffled", () => {
  for (const mode of ["pad", "pack"] as const) {
    const take = (seed: number) => Array.from({ length: 8 }, (_, step) => rows(new BatchSchedule(synthetic, options({ mode, seed })).batchAt(step)));
    assert.deepEqual(take(7), take(7), mode);
    assert.notDeepEqual(take(7), take(8), mode);
  }
  // pad: rows 10..19 are epoch 1, shuffled with seed 8.
  const stream = batchStream(synthetic, options({ batchSize: 5 }));
  const firstRows = Array.from({ length: 4 }, () => rows(stream.next().value)).flat();
  assert.deepEqual(firstRows.map((row) => row[0]), [...shuffledIndices(10, 7), ...shuffledIndices(10, 8)].map((i) => synthetic[i].ids[0]));
  assert.notDeepEqual([...shuffledIndices(10, 7)], [...shuffledIndices(10, 8)]);
});

test("resume: batchAt(k) and a stream started at k equal the k-th batch of an uninterrupted run", () => {
  for (const mode of ["pad", "pack"] as const) {
    const uninterrupted = batchStream(synthetic, options({ mode, batchSize: 4, seqLen: 5 }));
    const run = Array.from({ length: 12 }, () => uninterrupted.next().value);
    run.forEach((batch, step) => assert.equal(batch.step, step));
    for (const k of [0, 1, 2, 3, 5, 7, 11]) {
      assert.deepEqual(new BatchSchedule(synthetic, options({ mode, batchSize: 4, seqLen: 5 })).batchAt(k), run[k], `${mode} step ${k}`);
      const resumed = batchStream(synthetic, { ...options({ mode, batchSize: 4, seqLen: 5 }), startStep: k });
      assert.deepEqual(resumed.next().value, run[k], `${mode} resumed at ${k}`);
    }
  }
});

test("epoch progress and steps per epoch", () => {
  const schedule = new BatchSchedule(synthetic, options({ batchSize: 4 }));
  assert.equal(schedule.rowsPerEpoch, 10);
  assert.equal(schedule.batchAt(0).epoch, 0.4);
  assert.equal(schedule.stepsForEpochs(1), 3);
  assert.equal(schedule.stepsForEpochs(2), 5);
});

test("eval batches: one pass in order, the last batch completed with padding rows", () => {
  const pad = [...evalBatches(synthetic, options({ batchSize: 4, seqLen: 12 }))];
  assert.equal(pad.length, 3);
  assert.deepEqual(pad.flatMap((batch) => rows(batch)).slice(0, 10).map((row) => row.filter((id) => id !== PAD)), synthetic.map((e) => [...e.ids]));
  assert.deepEqual(rows(pad[2]).slice(2), [new Array<number>(12).fill(PAD), new Array<number>(12).fill(PAD)]);
  assert.ok(rows(pad[2], pad[2].labels).slice(2).flat().every((label) => label === IGNORE_INDEX));
  assert.equal(pad.reduce((total, batch) => total + batch.tokens, 0), 55);

  const pack = [...evalBatches(synthetic, options({ mode: "pack", batchSize: 2, seqLen: 8 }))];
  const stream = synthetic.flatMap((e) => [...e.ids, EOS]);
  assert.equal(pack.length, Math.ceil(stream.length / 16));
  const flat = pack.flatMap((batch) => rows(batch).flat());
  assert.deepEqual(flat.slice(0, stream.length), stream);
  assert.ok(flat.slice(stream.length).every((id) => id === PAD));
  assert.equal(pack.reduce((total, batch) => total + batch.tokens, 0), stream.length);
});

test("batching options are checked", () => {
  assert.throws(() => new BatchSchedule([], options()), /no examples to batch/);
  assert.throws(() => new BatchSchedule(synthetic, options({ seqLen: 0 })), /seqLen must be a positive integer, got 0/);
  assert.throws(() => new BatchSchedule(synthetic, options({ batchSize: 1.5 })), /batchSize must be a positive integer/);
  assert.throws(() => new BatchSchedule(synthetic, options({ mode: "packed" as "pack" })), /mode must be "pad" or "pack", got "packed"/);
  assert.throws(() => new BatchSchedule(synthetic, options()).batchAt(-1), /step must be a non-negative integer/);
  assert.deepEqual(batchingTokenIds(tokenizer), { padId: PAD, eosId: EOS });
  assert.deepEqual(batchingTokenIds(chatTokenizer), { padId: PAD, eosId: 513 });
  assert.deepEqual(batchingTokenIds(Tokenizer.load(join(FIXTURES, "hf/tokenizer"))), { padId: 0, eosId: undefined });
});

// --- splits and the loader ---

test("hold-out split: seeded, disjoint, sized like train_test_split", () => {
  const items = Array.from({ length: 10 }, (_, i) => i);
  const split = holdOut(items, 0.3, 1);
  assert.equal(split.eval.length, 3);
  assert.deepEqual([...split.train, ...split.eval].sort((a, b) => a - b), items);
  assert.deepEqual(split.train, [...split.train].sort((a, b) => a - b), "file order is kept");
  assert.deepEqual(holdOut(items, 0.3, 1), split);
  assert.notDeepEqual(holdOut(items, 0.3, 2).eval, split.eval);
  assert.equal(holdOut(items, 0.01, 1).eval.length, 1);
  assert.throws(() => holdOut(items, 0, 1), /between 0 and 1/);
  assert.throws(() => holdOut([1], 0.5, 1), /leaves none for training/);
});

test("loadDataset: examples and stats, with a held-out fraction or an eval file", () => {
  const file = join(DATA, "prompt-completion.jsonl");
  const { train, eval: held, stats } = loadDataset(file, tokenizer, { seqLen: 28, mode: "pad" });
  assert.deepEqual(train, encodeFile(file).examples);
  assert.deepEqual(held, []);
  assert.equal(stats.eval, undefined);
  assert.deepEqual(stats.train, {
    shape: "prompt-completion",
    rows: 3,
    tokens: train.reduce((total, e) => total + e.ids.length, 0),
    trainedTokens: train.reduce((total, e) => total + e.labels.filter((label) => label !== IGNORE_INDEX).length, 0),
    truncated: 1,
  });
  assert.deepEqual(train.map((e) => e.ids.length), [25, 30, 25]);

  const split = loadDataset(file, tokenizer, { seqLen: 28, mode: "pack", eval: { fraction: 0.3, seed: 3 } });
  assert.equal(split.eval.length, 1);
  assert.equal(split.train.length, 2);
  assert.deepEqual(split.stats.eval?.rows, 1);
  assert.equal(split.stats.train.truncated, 0);

  const withFile = loadDataset(join(DATA, "text.jsonl"), tokenizer, { seqLen: 64, mode: "pad", eval: { file: join(DATA, "prompt-completion.csv") } });
  assert.equal(withFile.stats.train.shape, "text");
  assert.equal(withFile.stats.eval?.shape, "prompt-completion");
  assert.equal(withFile.eval.length, 3);
});

test("a batch from the loader runs through llama-tiny with a finite loss", async () => {
  const { train } = loadDataset(join(DATA, "prompt-completion.csv"), tokenizer, { seqLen: 16, mode: "pad" });
  const { batch, labels } = new BatchSchedule(train, { batchSize: 2, seqLen: 16, mode: "pad", seed: 0, ...batchingTokenIds(tokenizer) }).batchAt(0);
  const model = loadModel(await testBackend(), LLAMA_DIR);
  try {
    const { loss } = model.run(batch, labels);
    assert.ok(Number.isFinite(loss) && loss! > 0, `loss ${loss}`);
  } finally {
    model.free();
  }
});
