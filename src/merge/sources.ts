// Where merge inputs come from: a Hugging Face checkpoint (folder with model.safetensors or a
// sharded index, or one .safetensors file) read one tensor at a time, optionally with a PEFT LoRA
// applied on the fly (mergekit's `model: base+adapter` form).
import fs from "node:fs";
import path from "node:path";
import { patternValue, readLoraConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../adapters/peft-config.ts";
import type { SafetensorsDtype } from "../io/dtype.ts";
import { FormatError } from "../io/errors.ts";
import { openCheckpoint, type Checkpoint } from "../io/safetensors.ts";

/** A LoRA update of one weight: scale * B @ A, A [r, in] and B [out, r] row-major (PyTorch layout). */
export interface LoraDelta {
  a: Float32Array;
  b: Float32Array;
  r: number;
  scale: number;
}

export interface SourceTensor {
  dtype: SafetensorsDtype;
  /** PyTorch order. */
  shape: readonly number[];
  byteLength: number;
}

export interface TensorSource {
  /** The reference as written in the config (for messages). */
  readonly ref: string;
  /** Folder holding config.json and tokenizer files, when there is one. */
  readonly dir: string | undefined;
  /** In file order. */
  readonly names: readonly string[];
  info(name: string): SourceTensor | undefined;
  readRaw(name: string): Uint8Array;
  /** The LoRA update to add to this tensor (base+adapter sources only). */
  loraDelta(name: string): LoraDelta | undefined;
  close(): void;
}

class CheckpointSource implements TensorSource {
  readonly names: readonly string[];
  readonly dir: string | undefined;
  private readonly checkpoint: Checkpoint;
  private readonly lora = new Map<string, () => LoraDelta>();

  constructor(readonly ref: string, modelPath: string, adapterDir?: string) {
    if (!fs.existsSync(modelPath)) throw new FormatError(modelPath, `model ${JSON.stringify(ref)} does not exist`);
    this.dir = fs.statSync(modelPath).isDirectory() ? modelPath : undefined;
    this.checkpoint = openCheckpoint(modelPath);
    this.names = [...this.checkpoint.tensors.keys()];
    if (adapterDir) {
      try {
        this.attachAdapter(adapterDir);
      } catch (err) {
        this.checkpoint.close();
        throw err;
      }
    }
  }

  info(name: string): SourceTensor | undefined {
    const info = this.checkpoint.tensors.get(name);
    return info && { dtype: info.dtype, shape: info.shape, byteLength: info.byteLength };
  }

  readRaw(name: string): Uint8Array {
    return this.checkpoint.readRaw(name);
  }

  loraDelta(name: string): LoraDelta | undefined {
    return this.lora.get(name)?.();
  }

  close(): void {
    this.checkpoint.close();
  }

  /** Indexes the adapter's modules by the weight they update; tensors are read when that weight is merged. */
  private attachAdapter(dir: string): void {
    const config = readLoraConfig(dir);
    const file = path.join(dir, ADAPTER_WEIGHTS);
    if (config.useDora) throw new FormatError(path.join(dir, ADAPTER_CONFIG), "use_dora: DoRA adapters cannot be applied before a merge (only plain LoRA)");
    const adapter = openCheckpoint(dir, ADAPTER_WEIGHTS);
    const keys = [...adapter.tensors.keys()];
    const other = keys.filter((k) => !/\.lora_[AB]\.weight$/.test(k));
    if (other.length) {
      adapter.close();
      throw new FormatError(file, `holds tensors other than LoRA A/B (modules_to_save, bias or embeddings), which base+adapter does not apply: ${other.slice(0, 5).join(", ")}`);
    }
    // The adapter file is small; its tensors are read here and the file closed.
    const tensors = new Map(keys.map((k) => [k, { data: adapter.readF32(k), shape: adapter.info(k).shape }]));
    adapter.close();
    for (const key of keys.filter((k) => k.endsWith(".lora_A.weight"))) {
      const module = key.slice(0, -".lora_A.weight".length).replace(/^base_model\.model\./, "");
      const a = tensors.get(key)!;
      const b = tensors.get(key.replace(/lora_A\.weight$/, "lora_B.weight"));
      if (!b) throw new FormatError(file, `${key} has no matching lora_B`);
      const weight = `${module}.weight`;
      const info = this.checkpoint.tensors.get(weight);
      if (!info) throw new FormatError(file, `the adapter updates ${weight}, which ${this.ref} does not have`);
      const [r, inFeatures] = a.shape;
      const [outFeatures, rB] = b.shape;
      if (info.shape.length !== 2 || info.shape[0] !== outFeatures || info.shape[1] !== inFeatures || rB !== r) {
        throw new FormatError(file, `tensor "${weight}" is [${info.shape.join(", ")}] but the adapter's B @ A is [${outFeatures}, ${inFeatures}] (rank ${r}/${rB})`);
      }
      const rank = patternValue(config.rankPattern, module, config.r);
      const alpha = patternValue(config.alphaPattern, module, config.loraAlpha);
      const scale = config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
      this.lora.set(weight, () => ({ a: a.data, b: b.data, r: r!, scale }));
    }
  }
}

/**
 * Opens a model reference: a checkpoint folder or .safetensors file, or `model+adapter` where
 * the part after the last "+" is a PEFT LoRA folder applied to the model's weights.
 */
export function openSource(ref: string, resolve: (p: string) => string = (p) => p): TensorSource {
  const plus = ref.lastIndexOf("+");
  if (plus > 0) {
    const modelPath = resolve(ref.slice(0, plus));
    const adapterPath = resolve(ref.slice(plus + 1));
    if (fs.existsSync(path.join(adapterPath, ADAPTER_CONFIG))) return new CheckpointSource(ref, modelPath, adapterPath);
  }
  return new CheckpointSource(ref, resolve(ref));
}
