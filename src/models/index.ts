// Architecture dispatch: a Hugging Face checkpoint folder to a loaded model.
import type { Backend } from "../engine/backend.ts";
import type { DType } from "../engine/tensor.ts";
import { loadConfig, type ModelConfig } from "../io/hf-config.ts";
import { openCheckpoint } from "../io/safetensors.ts";
import { BertModel } from "./bert.ts";
import { isGgufPath, loadGgufModel } from "./gguf-loader.ts";
import { Gpt2Model } from "./gpt2.ts";
import { LlamaModel } from "./llama.ts";
import type { Model } from "./model.ts";

export function createModel(backend: Backend, config: ModelConfig, weightDtype: DType = "f32"): Model {
  switch (config.family) {
    case "llama":
      return new LlamaModel(backend, config, weightDtype);
    case "gpt2":
      return new Gpt2Model(backend, config, weightDtype);
    case "bert":
      return new BertModel(backend, config, weightDtype);
  }
}

/**
 * Loads config.json and the safetensors weights (single file or sharded) of a checkpoint folder,
 * or a llama.cpp model file when `dir` ends in .gguf (see gguf-loader.ts).
 */
export function loadModel(backend: Backend, dir: string, options: { weightDtype?: DType } = {}): Model {
  if (isGgufPath(dir)) return loadGgufModel(backend, dir, options);
  const config = loadConfig(dir);
  const model = createModel(backend, config, options.weightDtype);
  const checkpoint = openCheckpoint(dir);
  try {
    model.load(checkpoint);
  } catch (err) {
    model.free();
    throw err;
  } finally {
    checkpoint.close();
  }
  return model;
}
