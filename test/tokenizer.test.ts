import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer, type ChatMessage } from "../src/io/tokenizer.ts";
import { FormatError } from "../src/io/errors.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const TOKENIZER_DIR = join(FIXTURES, "hf/tokenizer");
const LLAMA_DIR = join(FIXTURES, "hf/llama-tiny");

interface ReferenceCase {
  text: string;
  ids: number[];
  idsWithBos: number[];
  decoded: string;
  decodedSkipSpecial: string;
}
/** Made by tokenizer-reference.py with the Rust tokenizers library. */
const reference = JSON.parse(readFileSync(join(FIXTURES, "tokenizer-reference.json"), "utf8")) as {
  bosPostProcessor: unknown;
  cases: ReferenceCase[];
};
const tokenizerJson = JSON.parse(readFileSync(join(TOKENIZER_DIR, "tokenizer.json"), "utf8")) as Record<string, unknown>;

/** Writes a tokenizer directory into a fresh temp dir, runs `body`, and removes the dir. */
function withTokenizerDir(files: Record<string, unknown>, body: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "tokenizer-"));
  try {
    for (const [name, content] of Object.entries(files)) {
      writeFileSync(join(dir, name), typeof content === "string" ? content : JSON.stringify(content));
    }
    body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function assertFormatError(run: () => unknown, file: string, fragment: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof FormatError, `expected FormatError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
    return true;
  });
}

test("encode matches the Rust tokenizers reference", () => {
  for (const dir of [TOKENIZER_DIR, LLAMA_DIR]) {
    const tokenizer = Tokenizer.load(dir);
    for (const { text, ids } of reference.cases) {
      assert.deepEqual(tokenizer.encode(text), ids, `${dir}: ${JSON.stringify(text)}`);
      assert.deepEqual(tokenizer.encode(text, { addSpecialTokens: false }), ids, `${dir}: ${JSON.stringify(text)}`);
    }
  }
});

test("addSpecialTokens applies the tokenizer.json post-processor", () => {
  withTokenizerDir({ "tokenizer.json": { ...tokenizerJson, post_processor: reference.bosPostProcessor } }, (dir) => {
    const tokenizer = Tokenizer.load(dir);
    for (const { text, ids, idsWithBos } of reference.cases) {
      assert.deepEqual(tokenizer.encode(text), idsWithBos, JSON.stringify(text));
      assert.deepEqual(tokenizer.encode(text, { addSpecialTokens: false }), ids, JSON.stringify(text));
    }
  });
});

test("decode matches the reference and round-trips", () => {
  const tokenizer = Tokenizer.load(LLAMA_DIR);
  for (const { text, ids, decoded, decodedSkipSpecial } of reference.cases) {
    assert.equal(tokenizer.decode(ids), decoded, JSON.stringify(text));
    assert.equal(decoded, text);
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), decodedSkipSpecial, JSON.stringify(text));
  }
  // Spaces before punctuation survive: no WordPiece-style clean-up on a BPE tokenizer.
  const spaced = "a , b . c ! isn 't";
  assert.equal(tokenizer.decode(tokenizer.encode(spaced)), spaced);
  assert.equal(tokenizer.decode([]), "");
  assert.throws(() => tokenizer.decode([5, 512]), RangeError);
  assert.throws(() => tokenizer.decode([1.5]), RangeError);
});

test("special token ids, vocabulary lookups", () => {
  const llama = Tokenizer.load(LLAMA_DIR);
  assert.equal(llama.vocabSize, 512);
  assert.equal(llama.bosId, undefined);
  assert.equal(llama.eosId, 0);
  assert.equal(llama.padId, 1);
  assert.equal(llama.tokenToId("<|endoftext|>"), 0);
  assert.equal(llama.tokenToId("<pad>"), 1);
  assert.equal(llama.tokenToId("no such token"), undefined);
  assert.equal(llama.idToToken(0), "<|endoftext|>");
  assert.equal(llama.idToToken(llama.tokenToId("Ġsection")!), "Ġsection");
  assert.equal(llama.idToToken(512), undefined);
  assert.equal(llama.hasChatTemplate, false);

  // Without tokenizer_config.json nothing says which token is which.
  const bare = Tokenizer.load(TOKENIZER_DIR);
  assert.equal(bare.vocabSize, 512);
  assert.equal(bare.eosId, undefined);
  assert.equal(bare.padId, undefined);

  // AddedToken objects as older tokenizer_config.json files write them.
  withTokenizerDir(
    {
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": { bos_token: { __type: "AddedToken", content: "<|endoftext|>" }, eos_token: "<|endoftext|>", pad_token: null },
    },
    (dir) => {
      const tokenizer = Tokenizer.load(dir);
      assert.equal(tokenizer.bosId, 0);
      assert.equal(tokenizer.eosId, 0);
      assert.equal(tokenizer.padId, undefined);
    },
  );
});

test("load errors name the file", () => {
  withTokenizerDir({}, (dir) => assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer.json"), "not found"));
  withTokenizerDir({ "tokenizer.json": "{ nope" }, (dir) => assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer.json"), "invalid JSON"));
  withTokenizerDir({ "tokenizer.json": { ...tokenizerJson, model: { type: "Mystery" } } }, (dir) =>
    assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer.json"), "Mystery"),
  );
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": "[]" }, (dir) =>
    assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer_config.json"), "expected a JSON object"),
  );
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { eos_token: "</s>" } }, (dir) =>
    assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer_config.json"), '"eos_token": "</s>" is not in the vocabulary'),
  );
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { eos_token: 7 } }, (dir) =>
    assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer_config.json"), '"eos_token"'),
  );
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: 3 } }, (dir) =>
    assertFormatError(() => Tokenizer.load(dir), join(dir, "tokenizer_config.json"), '"chat_template"'),
  );
});

const CHATML_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** The fixture tokenizer plus ChatML's turn markers as special added tokens, as real ChatML models have. */
const chatmlTokenizerJson = {
  ...tokenizerJson,
  added_tokens: [
    ...(tokenizerJson.added_tokens as object[]),
    { id: 512, content: "<|im_start|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: 513, content: "<|im_end|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  ],
};

const CONVERSATION: ChatMessage[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "What is the license?" },
  { role: "assistant", content: "MIT, without warranty." },
  { role: "user", content: "And\n\nwhy?" },
  { role: "assistant", content: "Because   the authors chose it 🚀" },
];

/** Decodes each run of consecutive masked tokens separately. */
function maskedRuns(tokenizer: Tokenizer, ids: number[], mask: boolean[]): string[] {
  const runs: string[] = [];
  let start = -1;
  for (let i = 0; i <= ids.length; i++) {
    if (i < ids.length && mask[i]) {
      if (start === -1) start = i;
    } else if (start !== -1) {
      runs.push(tokenizer.decode(ids.slice(start, i)));
      start = -1;
    }
  }
  return runs;
}

test("ChatML template: rendering and the assistant mask", () => {
  withTokenizerDir(
    {
      "tokenizer.json": chatmlTokenizerJson,
      "tokenizer_config.json": { bos_token: "<|endoftext|>", eos_token: "<|im_end|>", pad_token: "<pad>", chat_template: CHATML_TEMPLATE },
    },
    (dir) => {
      const tokenizer = Tokenizer.load(dir);
      assert.equal(tokenizer.vocabSize, 514);
      assert.equal(tokenizer.eosId, 513);
      assert.equal(tokenizer.hasChatTemplate, true);

      const prompt = tokenizer.applyChatTemplate(CONVERSATION.slice(0, 2), { addGenerationPrompt: true });
      assert.equal(
        prompt,
        "<|endoftext|><|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is the license?<|im_end|>\n<|im_start|>assistant\n",
      );
      assert.equal(tokenizer.applyChatTemplate(CONVERSATION.slice(0, 2)), prompt.slice(0, -"<|im_start|>assistant\n".length));

      const { ids, assistantMask } = tokenizer.encodeChat(CONVERSATION);
      assert.deepEqual(ids, tokenizer.encode(tokenizer.applyChatTemplate(CONVERSATION), { addSpecialTokens: false }));
      assert.equal(ids[0], 0, "BOS comes from the template, not the post-processor");
      assert.equal(assistantMask.length, ids.length);
      assert.deepEqual(maskedRuns(tokenizer, ids, assistantMask), [
        "MIT, without warranty.<|im_end|>\n",
        "Because   the authors chose it 🚀<|im_end|>\n",
      ]);
      const unmasked = tokenizer.decode(ids.filter((_, i) => !assistantMask[i]));
      assert.equal(unmasked, `${prompt}<|im_start|>user\nAnd\n\nwhy?<|im_end|>\n<|im_start|>assistant\n`);
    },
  );
});

test("assistant mask without special turn markers keeps every reply token", () => {
  // Plain-text turns let BPE merge across turn boundaries, which the mask must survive.
  const template =
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: template } }, (dir) => {
    const tokenizer = Tokenizer.load(dir);
    const { ids, assistantMask } = tokenizer.encodeChat(CONVERSATION);
    const runs = maskedRuns(tokenizer, ids, assistantMask);
    assert.equal(runs.length, 2);
    for (const [run, reply] of runs.map((run, i) => [run, CONVERSATION[2 * i + 2]!.content] as const)) {
      assert.ok(run.includes(reply), `${JSON.stringify(run)} lacks ${JSON.stringify(reply)}`);
      assert.ok(!run.includes("user:"), JSON.stringify(run));
    }
  });
});

test("chat template sources and errors", () => {
  // chat_template.jinja wins over the config field, as in transformers.
  withTokenizerDir(
    { "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: "config" }, "chat_template.jinja": "file:{{ messages | length }}" },
    (dir) => assert.equal(Tokenizer.load(dir).applyChatTemplate(CONVERSATION), "file:5"),
  );
  withTokenizerDir(
    {
      "tokenizer.json": tokenizerJson,
      "tokenizer_config.json": { chat_template: [{ name: "tool_use", template: "tools" }, { name: "default", template: "default" }] },
    },
    (dir) => assert.equal(Tokenizer.load(dir).applyChatTemplate(CONVERSATION), "default"),
  );
  assertFormatError(() => Tokenizer.load(LLAMA_DIR).applyChatTemplate(CONVERSATION), join(LLAMA_DIR, "tokenizer_config.json"), "no chat_template");

  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: "{% if %}" } }, (dir) => {
    const tokenizer = Tokenizer.load(dir);
    assert.equal(tokenizer.hasChatTemplate, true);
    assert.deepEqual(tokenizer.encode("ok"), Tokenizer.load(TOKENIZER_DIR).encode("ok"), "a bad template does not block plain tokenizing");
    assertFormatError(() => tokenizer.applyChatTemplate(CONVERSATION), join(dir, "tokenizer_config.json"), "does not parse");
  });

  const strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}x";
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: strict } }, (dir) => {
    assert.throws(() => Tokenizer.load(dir).applyChatTemplate(CONVERSATION), /tokenizer_config\.json: chat template failed to render: must start with user/);
  });

  // A template that rewrites earlier turns once later ones exist has no stable prefixes to mask by.
  const lastOnly = "{% for message in messages %}{% if loop.last %}{{ message['content'] }}{% else %}.{% endif %}{% endfor %}";
  withTokenizerDir({ "tokenizer.json": tokenizerJson, "tokenizer_config.json": { chat_template: lastOnly } }, (dir) => {
    assert.throws(() => Tokenizer.load(dir).encodeChat(CONVERSATION), /cannot locate assistant message 2/);
  });
});
