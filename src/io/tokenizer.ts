import { existsSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { FormatError } from "./errors.ts";
import { readJsonFile, readTextFile } from "./files.ts";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface EncodeOptions {
  /** What the tokenizer.json post-processor adds (BOS, EOS, CLS/SEP...). Default true, as in transformers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the header that opens an assistant turn, for generation. Default false. */
  addGenerationPrompt?: boolean;
}

export interface EncodedChat {
  ids: number[];
  /** Same length as ids; true where the token belongs to an assistant turn (the tokens to train on). */
  assistantMask: boolean[];
}

/** The special tokens transformers passes to chat templates, by their template variable names. */
const TEMPLATE_SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] as const;

/**
 * The part of @huggingface/tokenizers used here. Its .d.ts files import each other without file
 * extensions, which NodeNext resolution cannot follow, so under skipLibCheck the package's own
 * types silently degrade to `any`; this keeps the calls checked.
 */
interface HfTokenizerApi {
  /** An id is undefined for a piece outside the vocabulary when the model has no unk token. */
  encode(text: string, options: { add_special_tokens: boolean }): { ids: (number | undefined)[]; tokens: string[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}

interface ChatTemplateSource {
  text: string;
  file: string;
}

/**
 * A Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json, chat_template.jinja)
 * on top of @huggingface/tokenizers and @huggingface/jinja.
 */
export class Tokenizer {
  private compiledChatTemplate: Template | undefined;

  private constructor(
    private readonly inner: HfTokenizerApi,
    /** Size an embedding table needs: highest token id + 1, added tokens included. */
    readonly vocabSize: number,
    readonly bosId: number | undefined,
    readonly eosId: number | undefined,
    readonly padId: number | undefined,
    private readonly templateSpecialTokens: Record<string, string>,
    private readonly chatTemplateSource: ChatTemplateSource | undefined,
    /** Where a chat template was looked for, to name in errors when there is none. */
    private readonly configFile: string,
    private readonly cleanUpTokenizationSpaces: boolean,
  ) {}

  static load(dir: string): Tokenizer {
    const tokenizerFile = join(dir, "tokenizer.json");
    const configFile = join(dir, "tokenizer_config.json");
    const tokenizerJson = readJsonObject(tokenizerFile);
    const config = existsSync(configFile) ? readJsonObject(configFile) : {};
    return Tokenizer.build(tokenizerJson, config, tokenizerFile, configFile, findChatTemplate(dir, config, configFile));
  }

  /**
   * A tokenizer from the parsed contents of tokenizer.json and tokenizer_config.json (a chat
   * template only from its chat_template field), e.g. one rebuilt from GGUF metadata; `source`
   * names where they came from in errors.
   */
  static fromJson(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, source = "tokenizer.json"): Tokenizer {
    const template = typeof config.chat_template === "string" ? { text: config.chat_template, file: source } : undefined;
    return Tokenizer.build(tokenizerJson, config, source, source, template);
  }

  private static build(
    tokenizerJson: Record<string, unknown>,
    config: Record<string, unknown>,
    tokenizerFile: string,
    configFile: string,
    chatTemplate: ChatTemplateSource | undefined,
  ): Tokenizer {
    let inner: HfTokenizerApi;
    try {
      inner = new HfTokenizer(tokenizerJson, config);
    } catch (error) {
      throw new FormatError(tokenizerFile, `not a usable tokenizer: ${(error as Error).message}`);
    }

    const templateSpecialTokens: Record<string, string> = {};
    for (const key of TEMPLATE_SPECIAL_TOKENS) {
      const content = specialTokenContent(config, key, configFile);
      if (content !== undefined) templateSpecialTokens[key] = content;
    }
    const idOf = (key: "bos_token" | "eos_token" | "pad_token"): number | undefined => {
      const content = templateSpecialTokens[key];
      if (content === undefined) return undefined;
      const id = inner.token_to_id(content);
      if (id === undefined) throw new FormatError(configFile, `field "${key}": "${content}" is not in the vocabulary of ${tokenizerFile}`);
      return id;
    };

    let highestId = -1;
    for (const id of inner.get_vocab(true).values()) highestId = Math.max(highestId, id);

    // transformers 5 defaults this to false and ignores it for BPE, where it would delete real
    // spaces before punctuation; @huggingface/tokenizers defaults it to true.
    const modelType = (tokenizerJson.model as { type?: unknown } | undefined)?.type;
    const cleanUpTokenizationSpaces = config.clean_up_tokenization_spaces === true && modelType !== "BPE";

    return new Tokenizer(
      inner,
      highestId + 1,
      idOf("bos_token"),
      idOf("eos_token"),
      idOf("pad_token"),
      templateSpecialTokens,
      chatTemplate,
      configFile,
      cleanUpTokenizationSpaces,
    );
  }

  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    const { ids, tokens } = this.inner.encode(text, { add_special_tokens: addSpecialTokens });
    const unknown = ids.findIndex((id) => id === undefined);
    if (unknown !== -1) {
      throw new Error(`cannot encode piece ${JSON.stringify(tokens[unknown])}: not in the vocabulary and the tokenizer has no unk token`);
    }
    return ids as number[];
  }

  decode(ids: readonly number[], { skipSpecialTokens = false }: DecodeOptions = {}): string {
    // The library rejects an empty list and turns unknown ids into empty strings; neither is what a caller wants.
    if (ids.length === 0) return "";
    const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= this.vocabSize);
    if (bad !== undefined) throw new RangeError(`token id ${bad} is outside the vocabulary (0..${this.vocabSize - 1})`);
    return this.inner.decode([...ids], {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: this.cleanUpTokenizationSpaces,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplateSource !== undefined;
  }

  applyChatTemplate(messages: readonly ChatMessage[], { addGenerationPrompt = false }: ChatTemplateOptions = {}): string {
    const { template, file } = this.chatTemplate();
    try {
      return template.render({ ...this.templateSpecialTokens, messages, add_generation_prompt: addGenerationPrompt });
    } catch (error) {
      throw new Error(`${file}: chat template failed to render: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Renders and tokenizes a conversation, marking the tokens of assistant turns.
   *
   * Templates do not say which characters belong to which message, so the boundaries are found by
   * rendering prefixes of the conversation, which works for any template: the reply of assistant
   * message i starts where the rendering of messages[0..i) with the generation prompt ends (so the
   * header the model is prompted with is not trained on) and ends where the rendering of
   * messages[0..i] ends (so whatever closes the turn, such as an end-of-turn token, is trained on).
   * Each boundary is then mapped to a token index by tokenizing the prefix text and taking the
   * longest common prefix with the ids of the whole conversation; where the text alone tokenizes
   * differently near the cut (merges across it), the boundary moves to the last token both agree
   * on. The whole conversation is tokenized once, without post-processor special tokens, as
   * transformers does, because templates write BOS and turn markers themselves.
   */
  encodeChat(messages: readonly ChatMessage[]): EncodedChat {
    const text = this.applyChatTemplate(messages);
    const ids = this.encode(text, { addSpecialTokens: false });
    const assistantMask = new Array<boolean>(ids.length).fill(false);
    const tokenIndexAt = (prefix: string): number =>
      prefix.length === text.length ? ids.length : commonPrefixLength(this.encode(prefix, { addSpecialTokens: false }), ids);

    messages.forEach((message, i) => {
      if (message.role !== "assistant") return;
      const before = messages.slice(0, i);
      let replyStart = this.applyChatTemplate(before, { addGenerationPrompt: true });
      // Some templates open a finished assistant turn differently from their generation prompt.
      if (!text.startsWith(replyStart)) replyStart = this.applyChatTemplate(before);
      const replyEnd = this.applyChatTemplate(messages.slice(0, i + 1));
      if (!text.startsWith(replyStart) || !text.startsWith(replyEnd)) {
        throw new Error(
          `${this.chatTemplate().file}: cannot locate assistant message ${i} in the rendered conversation: ` +
            "the chat template renders earlier messages differently once later ones follow",
        );
      }
      assistantMask.fill(true, tokenIndexAt(replyStart), tokenIndexAt(replyEnd));
    });
    return { ids, assistantMask };
  }

  private chatTemplate(): { template: Template; file: string } {
    const source = this.chatTemplateSource;
    if (source === undefined) {
      throw new FormatError(this.configFile, "no chat_template, and no chat_template.jinja beside it");
    }
    try {
      this.compiledChatTemplate ??= new Template(source.text);
    } catch (error) {
      throw new FormatError(source.file, `chat template does not parse: ${(error as Error).message}`);
    }
    return { template: this.compiledChatTemplate, file: source.file };
  }
}

function readJsonObject(file: string): Record<string, unknown> {
  const json = readJsonFile(file);
  if (!isPlainObject(json)) throw new FormatError(file, "expected a JSON object");
  return json;
}

/** tokenizer_config.json writes special tokens as strings or as serialized AddedToken objects. */
function specialTokenContent(config: Record<string, unknown>, key: string, file: string): string | undefined {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (isPlainObject(value) && typeof value.content === "string") return value.content;
  throw new FormatError(file, `field "${key}": expected a token string or an object with "content"`);
}

/**
 * transformers 4.43+ saves the template as chat_template.jinja and lets that file win over the
 * chat_template field; older configs hold either one template or a list of named ones.
 */
function findChatTemplate(dir: string, config: Record<string, unknown>, configFile: string): ChatTemplateSource | undefined {
  const jinjaFile = join(dir, "chat_template.jinja");
  if (existsSync(jinjaFile)) return { text: readTextFile(jinjaFile), file: jinjaFile };

  const field = config.chat_template;
  if (field === undefined || field === null) return undefined;
  if (typeof field === "string") return { text: field, file: configFile };
  if (Array.isArray(field)) {
    const named = field.find((entry) => isPlainObject(entry) && entry.name === "default");
    if (named !== undefined && typeof named.template === "string") return { text: named.template, file: configFile };
  }
  throw new FormatError(configFile, 'field "chat_template": expected a template string or a list with a {"name": "default", "template": ...} entry');
}

function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  let length = 0;
  while (length < a.length && length < b.length && a[length] === b[length]) length++;
  return length;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
