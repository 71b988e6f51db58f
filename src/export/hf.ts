// Hugging Face outputs: a (merged) model as a checkpoint folder that transformers loads
// (config.json, sharded model.safetensors, tokenizer files), and an adapter in PEFT's layout.
// Folders appear atomically: everything is written into a temporary sibling that is renamed into place.
import fs from "node:fs";
import path from "node:path";
import { saveAdapter } from "../adapters/peft-io.ts";
import type { LoraAdapter } from "../adapters/lora.ts";
import { fromFloat32, type FloatDtype } from "../io/dtype.ts";
import type { GgufValue } from "../io/gguf.ts";
import { tokenizerJsonFromGguf } from "../io/gguf-names.ts";
import type { ModelConfig } from "../io/hf-config.ts";
import { ShardedSafetensorsWriter } from "../io/safetensors.ts";
import { OutputDir } from "../merge/output.ts";
import type { Model } from "../models/model.ts";

export const SAFETENSORS_DTYPES = ["f32", "f16", "bf16"] as const;
export type SafetensorsExportDtype = (typeof SAFETENSORS_DTYPES)[number];

const STORAGE: Record<SafetensorsExportDtype, FloatDtype> = { f32: "F32", f16: "F16", bf16: "BF16" };
const TORCH_DTYPE: Record<SafetensorsExportDtype, string> = { f32: "float32", f16: "float16", bf16: "bfloat16" };
const MODEL_FILES = [
  "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
  "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
];

export interface SafetensorsExport {
  /** The model to write, with any adapter already merged (LoraAdapter.merge) and detached. */
  model: Model;
  /** Where config.json and the tokenizer files come from: a Hugging Face folder, or a GGUF's metadata. */
  source: { dir: string } | { ggufMetadata: ReadonlyMap<string, GgufValue>; file: string };
  out: string;
  dtype?: SafetensorsExportDtype;
  maxShardBytes?: number;
  overwrite?: boolean;
}

/** Writes model.safetensors (sharded past maxShardBytes, with its index), config.json and tokenizer files. */
export function exportSafetensors(e: SafetensorsExport): string[] {
  const dtype = e.dtype ?? "f32";
  if (!(SAFETENSORS_DTYPES as readonly string[]).includes(dtype)) throw new Error(`--dtype ${dtype} is not one of ${SAFETENSORS_DTYPES.join(", ")} for safetensors`);
  const output = new OutputDir(e.out, e.overwrite);
  try {
    const writer = new ShardedSafetensorsWriter(output.temp, { maxShardBytes: e.maxShardBytes });
    try {
      for (const name of e.model.parameterNames) {
        const t = e.model.param(name);
        writer.add(name, STORAGE[dtype], t.torchShape, fromFloat32(STORAGE[dtype], t.getF32()));
      }
      writer.finish();
    } catch (err) {
      writer.abort();
      throw err;
    }
    if ("dir" in e.source) {
      const configFile = path.join(e.source.dir, "config.json");
      const json = JSON.parse(fs.readFileSync(configFile, "utf8")) as Record<string, unknown>;
      const keys = ["torch_dtype", "dtype"].filter((k) => k in json);
      for (const key of keys.length ? keys : ["dtype"]) json[key] = TORCH_DTYPE[dtype];
      output.writeFile("config.json", `${JSON.stringify(json, null, 2)}\n`);
      for (const name of MODEL_FILES) {
        const file = path.join(e.source.dir, name);
        if (fs.existsSync(file)) output.copyFile(file);
      }
    } else {
      output.writeFile("config.json", `${JSON.stringify(hfConfigJson(e.model.config, TORCH_DTYPE[dtype]), null, 2)}\n`);
      if (e.source.ggufMetadata.has("tokenizer.ggml.model")) {
        const { tokenizer, tokenizerConfig } = tokenizerJsonFromGguf(e.source.ggufMetadata, e.source.file);
        output.writeFile("tokenizer.json", `${JSON.stringify(tokenizer)}\n`);
        output.writeFile("tokenizer_config.json", `${JSON.stringify({ tokenizer_class: "PreTrainedTokenizerFast", ...tokenizerConfig }, null, 2)}\n`);
      }
    }
    return output.commit();
  } catch (err) {
    output.discard();
    throw err;
  }
}

/** config.json as transformers writes it for a config tasktune read (e.g. from a GGUF). */
export function hfConfigJson(config: ModelConfig, dtype: string): Record<string, unknown> {
  const ids = (c: { bosTokenId?: number; eosTokenIds: number[] }) => ({
    bos_token_id: c.bosTokenId ?? null,
    eos_token_id: c.eosTokenIds.length === 0 ? null : c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
  });
  if (config.family === "llama") {
    const c = config;
    const s = c.ropeScaling;
    const rope: Record<string, unknown> = { rope_theta: c.ropeTheta, rope_type: s.type === "none" ? "default" : s.type };
    if (s.type === "linear" || s.type === "dynamic") rope.factor = s.factor;
    if (s.type === "yarn") {
      Object.assign(rope, {
        factor: s.factor, original_max_position_embeddings: s.originalMaxPositionEmbeddings, beta_fast: s.betaFast,
        beta_slow: s.betaSlow, attention_factor: s.attentionFactor, truncate: s.truncate,
      });
    }
    if (s.type === "llama3") {
      Object.assign(rope, {
        factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor,
        original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      });
    }
    const architectures = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" }[c.modelType];
    return {
      architectures: [architectures],
      model_type: c.modelType,
      vocab_size: c.vocabSize,
      hidden_size: c.hiddenSize,
      intermediate_size: c.intermediateSize,
      num_hidden_layers: c.numLayers,
      num_attention_heads: c.numHeads,
      num_key_value_heads: c.numKvHeads,
      head_dim: c.headDim,
      hidden_act: c.hiddenAct,
      max_position_embeddings: c.maxPositionEmbeddings,
      rms_norm_eps: c.rmsNormEps,
      rope_parameters: rope,
      ...(c.modelType === "llama" ? { attention_bias: c.attentionBias.qkv, mlp_bias: c.mlpBias } : {}),
      tie_word_embeddings: c.tieWordEmbeddings,
      ...ids(c),
      pad_token_id: c.padTokenId ?? null,
      dtype,
    };
  }
  if (config.family === "gpt2") {
    const c = config;
    return {
      architectures: ["GPT2LMHeadModel"],
      model_type: "gpt2",
      vocab_size: c.vocabSize,
      n_embd: c.hiddenSize,
      n_layer: c.numLayers,
      n_head: c.numHeads,
      n_inner: c.intermediateSize,
      n_positions: c.maxPositions,
      layer_norm_epsilon: c.layerNormEps,
      activation_function: c.activation,
      tie_word_embeddings: c.tieWordEmbeddings,
      ...ids(c),
      dtype,
    };
  }
  throw new Error(`writing config.json for ${config.modelType} from a GGUF is not supported`);
}

/** Writes an adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors) into a fresh folder. */
export function exportPeft(adapter: LoraAdapter, out: string, overwrite = false): string[] {
  const output = new OutputDir(out, overwrite);
  try {
    saveAdapter(adapter, output.temp);
    return output.commit();
  } catch (err) {
    output.discard();
    throw err;
  }
}
