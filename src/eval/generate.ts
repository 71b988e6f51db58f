// Autoregressive generation with a KV cache: prompts are left-padded into one batch, prefilled in
// one forward pass, then decoded a token per pass; greedy, or temperature / top-k / top-p
// sampling from a seeded generator; stop strings, EOS and a token budget end each row.
import { Graph } from "../engine/graph.ts";
import { seededUniform } from "../engine/random.ts";
import type { Tokenizer } from "../io/tokenizer.ts";
import { KvCache } from "../models/kv-cache.ts";
import type { Batch, Model } from "../models/model.ts";

export interface GenerationOptions {
  maxNewTokens: number;
  stop?: string[];
  /** 0 or undefined: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export interface Generation {
  /** The continuation, without the prompt and without the stop string that ended it. */
  text: string;
  tokens: number[];
  finishReason: "stop" | "eos" | "length";
}

interface CacheShape {
  layers: number;
  headDim: number;
  kvHeads: number;
}

function cacheShape(model: Model): CacheShape {
  const c = model.config;
  if (c.family === "llama") return { layers: c.numLayers, headDim: c.headDim, kvHeads: c.numKvHeads };
  if (c.family === "gpt2") return { layers: c.numLayers, headDim: c.hiddenSize / c.numHeads, kvHeads: c.numHeads };
  throw new Error(`${c.modelType} is not a generative model`);
}

export class Generator {
  readonly batchSize: number;
  readonly maxLength: number;
  private readonly cache: KvCache;

  constructor(readonly model: Model, readonly tokenizer: Tokenizer, options: { batchSize?: number; maxLength?: number } = {}) {
    if (model.kind !== "causal-lm") throw new Error(`generation needs a causal LM, not ${model.config.modelType} ${model.kind}`);
    this.batchSize = options.batchSize ?? 8;
    this.maxLength = options.maxLength ?? 512;
    const shape = cacheShape(model);
    this.cache = new KvCache(model.backend, shape.layers, shape.headDim, shape.kvHeads, this.maxLength, this.batchSize);
  }

  generate(prompts: readonly string[], options: GenerationOptions): Generation[] {
    const out: Generation[] = [];
    const random = seededUniform(options.seed ?? 0);
    for (let start = 0; start < prompts.length; start += this.batchSize) {
      out.push(...this.generateBatch(prompts.slice(start, start + this.batchSize), options, random));
    }
    return out;
  }

  private generateBatch(prompts: readonly string[], options: GenerationOptions, random: () => number): Generation[] {
    const B = this.batchSize;
    const encoded = prompts.map((p) => this.tokenizer.encode(p));
    const promptLength = Math.max(1, ...encoded.map((ids) => ids.length));
    if (promptLength + options.maxNewTokens > this.maxLength) {
      throw new Error(`a prompt of ${promptLength} tokens plus ${options.maxNewTokens} new tokens exceeds the generator's ${this.maxLength}`);
    }
    // Left padding aligns every prompt's end, so one position index serves the whole batch.
    const padding = Array.from({ length: B }, (_, b) => promptLength - (encoded[b]?.length ?? 0));
    const keyMask: number[][] = padding.map((pad) => Array.from({ length: promptLength }, (_, t) => (t < pad ? 0 : 1)));
    const generated: number[][] = prompts.map(() => []);
    const finished: (Generation["finishReason"] | undefined)[] = prompts.map(() => undefined);
    const texts: string[] = prompts.map(() => "");
    let tokens = Array.from({ length: B }, (_, b) => [...Array(padding[b]).fill(0), ...(encoded[b] ?? [])]);
    let past = 0;
    while (true) {
      const n = tokens[0].length;
      const logits = this.step(tokens, past, keyMask, padding);
      past += n;
      const next = logits.map((row, b) => (b < prompts.length && !finished[b] ? this.pick(row, options, random) : 0));
      for (let b = 0; b < prompts.length; b++) {
        if (finished[b]) continue;
        if (next[b] === this.tokenizer.eosId) {
          finished[b] = "eos";
          continue;
        }
        generated[b].push(next[b]);
        texts[b] = this.tokenizer.decode(generated[b], { skipSpecialTokens: true });
        const stopAt = Math.min(...(options.stop ?? []).map((s) => texts[b].indexOf(s)).filter((i) => i >= 0));
        if (Number.isFinite(stopAt)) {
          texts[b] = texts[b].slice(0, stopAt);
          finished[b] = "stop";
        } else if (generated[b].length >= options.maxNewTokens) {
          finished[b] = "length";
        }
      }
      if (finished.every(Boolean)) break;
      tokens = next.map((t) => [t]);
      keyMask.forEach((row) => row.push(1));
    }
    return prompts.map((_, b) => ({ text: texts[b], tokens: generated[b], finishReason: finished[b]! }));
  }

  /** One forward pass over `tokens` [batch][n] after `past` cached positions; last-position logits per row. */
  private step(tokens: number[][], past: number, keyMask: number[][], padding: number[]): Float32Array[] {
    const B = this.batchSize;
    const n = tokens[0].length;
    const g = new Graph(this.model.backend, { maxNodes: this.model.graphNodes });
    try {
      const { logits, inputs } = this.model.forward(g, B, n, { cache: this.cache, past });
      g.output(logits);
      g.allocate();
      const batch: Batch = {
        batchSize: B, seqLen: n,
        inputIds: Int32Array.from(tokens.flat()),
        attentionMask: Int32Array.from(keyMask.flat()),
        positions: Int32Array.from({ length: B * n }, (_, i) => Math.max(0, past + (i % n) - padding[Math.floor(i / n)])),
      };
      for (const [t, fill] of inputs.values) t.setAll(fill(batch));
      g.compute();
      const all = logits.getF32();
      const vocab = logits.ne[0];
      return Array.from({ length: B }, (_, b) => all.slice(((b + 1) * n - 1) * vocab, (b + 1) * n * vocab));
    } finally {
      g.free();
    }
  }

  /** Greedy argmax, or a sample from the temperature-scaled, top-k and top-p filtered distribution. */
  private pick(logits: Float32Array, options: GenerationOptions, random: () => number): number {
    const temperature = options.temperature ?? 0;
    if (temperature <= 0) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    let order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    if (options.topK) order = order.slice(0, options.topK);
    const max = logits[order[0]];
    let weights = order.map((i) => Math.exp((logits[i] - max) / temperature));
    const total = weights.reduce((a, w) => a + w, 0);
    if (options.topP !== undefined && options.topP < 1) {
      let cumulative = 0;
      const keep = weights.findIndex((w) => (cumulative += w / total) >= options.topP!);
      order = order.slice(0, keep + 1);
      weights = weights.slice(0, keep + 1);
    }
    let r = random() * weights.reduce((a, w) => a + w, 0);
    for (let i = 0; i < order.length; i++) {
      r -= weights[i];
      if (r <= 0) return order[i];
    }
    return order[order.length - 1];
  }

  free(): void {
    this.cache.free();
  }
}
