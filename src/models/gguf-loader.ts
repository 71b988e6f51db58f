// llama.cpp model files as tasktune models: a GGUF of architecture llama, qwen2 or gpt2 (written
// by tasktune, by llama.cpp's convert_hf_to_gguf.py, or by anything else that follows it) becomes
// the Hugging Face config and state dict the model classes expect: names mapped back, Q/K rows
// un-permuted, Conv1D weights transposed back, quantized tensors dequantised through ggml. Its
// gpt2-type (byte-level BPE) tokenizer metadata becomes a tokenizer.json for the Tokenizer class.
import type { Backend } from "../engine/backend.ts";
import type { DType } from "../engine/tensor.ts";
import { FormatError } from "../io/errors.ts";
import { openGguf, type GgufFile } from "../io/gguf.ts";
import { configFromGguf, fromGgufLayout, tensorMappings, tokenizerJsonFromGguf, type TensorMapping } from "../io/gguf-names.ts";
import type { ModelConfig } from "../io/hf-config.ts";
import { Tokenizer } from "../io/tokenizer.ts";
import { createModel } from "./index.ts";
import type { Model, WeightSource } from "./model.ts";

/** Tensors a loader reads into the config rather than into a parameter. */
const CONSUMED = new Set(["rope_freqs.weight"]);

/** A GGUF model file seen as a Hugging Face checkpoint: HF names, HF shapes, HF layouts. */
export class GgufWeights implements WeightSource {
  readonly path: string;
  readonly config: ModelConfig;
  /** HF name to HF shape; tensors the mapping does not know keep their GGUF names, so that Model.load reports them. */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>;
  private readonly byHf = new Map<string, TensorMapping>();

  constructor(readonly file: GgufFile) {
    this.path = file.path;
    this.config = configFromGguf(file);
    const tensors = new Map<string, { shape: readonly number[] }>();
    const byGguf = new Map(tensorMappings(this.config).map((m) => [m.gguf, m]));
    for (const [name, info] of file.tensors) {
      if (CONSUMED.has(name)) continue;
      const mapping = byGguf.get(name);
      if (!mapping) {
        tensors.set(name, { shape: info.shape });
        continue;
      }
      // The GGUF stores the transpose of a Conv1D weight; 1-D tensors have no layout to undo.
      const shape = mapping.layout.kind === "transpose" ? [info.shape[1]!, info.shape[0]!] : info.shape;
      if (mapping.layout.kind === "transpose" && info.shape.length !== 2) {
        throw new FormatError(this.path, `tensor "${name}" has shape [${info.shape.join(", ")}], expected a matrix`);
      }
      tensors.set(mapping.hf, { shape });
      this.byHf.set(mapping.hf, mapping);
    }
    this.tensors = tensors;
  }

  /** The GGUF tensor holding an HF tensor. */
  ggufName(hfName: string): string {
    return this.byHf.get(hfName)?.gguf ?? hfName;
  }

  readF32(hfName: string): Float32Array {
    const mapping = this.byHf.get(hfName);
    if (!mapping) return this.file.readF32(hfName);
    const shape = this.tensors.get(hfName)!.shape;
    return fromGgufLayout(this.file.readF32(mapping.gguf), shape, mapping.layout);
  }

  close(): void {
    this.file.close();
  }
}

export function openGgufWeights(path: string, backend: Backend): GgufWeights {
  const file = openGguf(path, backend);
  try {
    return new GgufWeights(file);
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Loads a llama.cpp model file (llama, qwen2, gpt2) as a tasktune model; `weightDtype` as for loadModel. */
export function loadGgufModel(backend: Backend, path: string, options: { weightDtype?: DType } = {}): Model {
  const weights = openGgufWeights(path, backend);
  try {
    const model = createModel(backend, weights.config, options.weightDtype);
    try {
      model.load(weights);
    } catch (err) {
      model.free();
      throw err;
    }
    return model;
  } finally {
    weights.close();
  }
}

/** The tokenizer stored in a GGUF's metadata (tokenizer.ggml.model "gpt2": byte-level BPE). */
export function loadGgufTokenizer(file: GgufFile | string, backend?: Backend): Tokenizer {
  let gguf: GgufFile;
  if (typeof file === "string") {
    if (!backend) throw new Error("loadGgufTokenizer(path) needs a backend to read the file");
    gguf = openGguf(file, backend);
    gguf.close();
  } else {
    gguf = file;
  }
  const { tokenizer, tokenizerConfig } = tokenizerJsonFromGguf(gguf.metadata, gguf.path);
  return Tokenizer.fromJson(tokenizer, tokenizerConfig, gguf.path);
}

/** True for paths that name a GGUF file rather than a checkpoint folder. */
export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith(".gguf");
}

/** The tokenizer of a model location: a Hugging Face folder's tokenizer.json, or a GGUF's metadata. */
export function loadTokenizerFor(model: string, backend: Backend): Tokenizer {
  return isGgufPath(model) ? loadGgufTokenizer(model, backend) : Tokenizer.load(model);
}
