import { FormatError } from "../io/errors.ts";
import type { ChatMessage, Tokenizer } from "../io/tokenizer.ts";
import { IGNORE_INDEX } from "../models/model.ts";
import { RowError } from "./errors.ts";
import type { Row } from "./records.ts";

/** A tokenized row: labels equal ids where the loss is taken and are IGNORE_INDEX elsewhere. */
export interface Example {
  ids: Int32Array;
  labels: Int32Array;
}

/**
 * The row shapes of TRL's SFTTrainer: language modelling (loss on every token), prompt/completion
 * (loss on the completion) and conversational (loss on assistant turns).
 */
export type RowShape = "text" | "prompt-completion" | "chat";

/** The examples of one file and the row shape they share. */
export interface EncodedRows {
  shape: RowShape;
  examples: Example[];
}

type ParsedRow =
  | { shape: "text"; text: string }
  | { shape: "prompt-completion"; prompt: string; completion: string }
  | { shape: "chat"; messages: ChatMessage[] };

const SHAPE_FIELDS: Record<RowShape, string> = {
  text: '"text"',
  "prompt-completion": '"prompt"/"completion"',
  chat: '"messages"',
};

/**
 * Tokenizes the rows of one file, which must all have the same shape. Text and completions end
 * with EOS when the tokenizer has one (as TRL appends it), so the model learns to stop; chat rows
 * end however the chat template ends a turn.
 */
export function encodeRows(file: string, rows: readonly Row[], tokenizer: Tokenizer): EncodedRows {
  if (rows.length === 0) throw new FormatError(file, "no rows");
  const parsed = rows.map((row) => parseRow(file, row));
  const shape = parsed[0].shape;
  const mixed = parsed.findIndex((row) => row.shape !== shape);
  if (mixed !== -1) {
    throw new RowError(file, rows[mixed].line, `row has ${SHAPE_FIELDS[parsed[mixed].shape]}, but line ${rows[0].line} has ${SHAPE_FIELDS[shape]}; a file holds one row shape`);
  }
  const around = postProcessorTokens(tokenizer);
  const examples = parsed.map((row, i) => {
    const { line } = rows[i];
    let example: Example;
    try {
      example = encodeRow(row, tokenizer, around);
    } catch (error) {
      throw new RowError(file, line, (error as Error).message);
    }
    if (!example.labels.some((label) => label !== IGNORE_INDEX)) throw new RowError(file, line, "row has no tokens to train on");
    return example;
  });
  return { shape, examples };
}

function parseRow(file: string, { line, values }: Row): ParsedRow {
  const fail = (message: string) => new RowError(file, line, message);
  // datasets writes null for the columns a row lacks when it exports mixed data, so null is absent.
  const has = (field: string) => values[field] !== undefined && values[field] !== null;
  const stringField = (field: string): string => {
    const value = values[field];
    if (typeof value !== "string") throw fail(`field "${field}" must be a string`);
    return value;
  };

  const present: Record<RowShape, boolean> = { text: has("text"), "prompt-completion": has("prompt") || has("completion"), chat: has("messages") };
  const shapes = (Object.keys(present) as RowShape[]).filter((shape) => present[shape]);
  if (shapes.length === 0) throw fail('row has no "text", "prompt"/"completion" or "messages" field');
  if (shapes.length > 1) throw fail(`row mixes shapes: it has ${shapes.map((shape) => SHAPE_FIELDS[shape]).join(" and ")}`);
  switch (shapes[0]) {
    case "text":
      return { shape: "text", text: stringField("text") };
    case "prompt-completion":
      if (!has("prompt")) throw fail('row has "completion" but no "prompt"');
      if (!has("completion")) throw fail('row has "prompt" but no "completion"');
      return { shape: "prompt-completion", prompt: stringField("prompt"), completion: stringField("completion") };
    case "chat":
      return { shape: "chat", messages: parseMessages(values.messages, fail) };
  }
}

function parseMessages(value: unknown, fail: (message: string) => RowError): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw fail('field "messages" must be a non-empty array of {"role", "content"} objects');
  const messages = value.map((message: unknown, i): ChatMessage => {
    if (typeof message !== "object" || message === null || Array.isArray(message)) throw fail(`messages[${i}] must be an object`);
    const { role, content } = message as Record<string, unknown>;
    if (typeof role !== "string") throw fail(`messages[${i}].role must be a string`);
    if (typeof content !== "string") throw fail(`messages[${i}].content must be a string`);
    return { role, content };
  });
  if (!messages.some((message) => message.role === "assistant")) throw fail('"messages" has no "assistant" message to train on');
  return messages;
}

interface SpecialTokensAround {
  before: number[];
  after: number[];
}

function encodeRow(row: ParsedRow, tokenizer: Tokenizer, around: SpecialTokensAround): Example {
  const plain = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });
  switch (row.shape) {
    case "text":
      return withEos(labelled([...around.before, ...plain(row.text), ...around.after], true), tokenizer.eosId);
    case "prompt-completion":
      // Tokenized apart so that the boundary between ignored and trained tokens is exact; the
      // post-processor's tokens go around the pair, as they would around the joined text.
      return withEos(
        concat(labelled([...around.before, ...plain(row.prompt)], false), labelled([...plain(row.completion), ...around.after], true)),
        tokenizer.eosId,
      );
    case "chat": {
      const { ids, assistantMask } = tokenizer.encodeChat(row.messages);
      return { ids: Int32Array.from(ids), labels: Int32Array.from(ids, (id, i) => (assistantMask[i] ? id : IGNORE_INDEX)) };
    }
  }
}

/**
 * What the tokenizer.json post-processor puts around a single text: BOS before for Llama-style
 * tokenizers, EOS or SEP after for some. Found by encoding a probe with and without them.
 */
function postProcessorTokens(tokenizer: Tokenizer): SpecialTokensAround {
  const probe = "a";
  const plain = tokenizer.encode(probe, { addSpecialTokens: false });
  const full = tokenizer.encode(probe);
  for (let start = 0; start + plain.length <= full.length; start++) {
    if (plain.every((id, i) => full[start + i] === id)) return { before: full.slice(0, start), after: full.slice(start + plain.length) };
  }
  throw new Error(`the tokenizer's post-processor changes the tokens of ${JSON.stringify(probe)} instead of adding around them`);
}

function labelled(ids: number[], trained: boolean): Example {
  return { ids: Int32Array.from(ids), labels: trained ? Int32Array.from(ids) : new Int32Array(ids.length).fill(IGNORE_INDEX) };
}

function concat(a: Example, b: Example): Example {
  const join = (x: Int32Array, y: Int32Array) => {
    const out = new Int32Array(x.length + y.length);
    out.set(x);
    out.set(y, x.length);
    return out;
  };
  return { ids: join(a.ids, b.ids), labels: join(a.labels, b.labels) };
}

function withEos(example: Example, eosId: number | undefined): Example {
  if (eosId === undefined || example.ids.at(-1) === eosId) return example;
  return concat(example, labelled([eosId], true));
}
