// Full-model merges, streamed: one tensor at a time is read from every input checkpoint, merged
// in a ggml graph and appended to a sharded safetensors writer, so memory stays near one tensor
// per input (plus the graph's working buffers), never whole models. The output folder appears
// atomically with the merged shards, their index, config.json and the tokenizer files.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import type { Backend } from "../engine/backend.ts";
import { dtypeSize, type SafetensorsDtype } from "../io/dtype.ts";
import { ShardedSafetensorsWriter } from "../io/safetensors.ts";
import type { ModelMergeConfig } from "./config.ts";
import { getMergeMethod, knownParameterNames, type MergeMethod, type ParameterDef, type Params } from "./methods.ts";
import { OutputDir } from "./output.ts";
import { depthPosition, evaluateSetting, gradientPosition, isVocabularyTensor, layerIndex, type ParameterSetting } from "./params.ts";
import { openSource, type TensorSource } from "./sources.ts";
import { mergeTensor, type FloatDtype, type TensorInput } from "./tensor-merge.ts";

export interface MergeProgress {
  tensorsDone: number;
  tensorsTotal: number;
  /** Bytes of input tensors read so far, and in all. */
  bytesRead: number;
  bytesTotal: number;
  elapsedS: number;
  /** The tensor just written. */
  tensor: string;
}

export interface ModelMergeOptions {
  backend: Backend;
  /** Seed of the random drops (DARE); each tensor and model derives its own stream from it. Default 0. */
  seed?: number;
  /** Tensor bytes per output shard (default 5 GB, as save_pretrained). */
  maxShardBytes?: number;
  /** Replace a non-empty output folder. */
  overwrite?: boolean;
  onProgress?(progress: MergeProgress): void;
  /** Non-fatal notes (truncated vocabularies, ignored parameters). Default: stderr. */
  warn?(message: string): void;
}

export interface ModelMergeResult {
  outDir: string;
  files: string[];
  tensors: number;
  bytesRead: number;
  bytesWritten: number;
  seconds: number;
}

const FLOAT_DTYPES = new Set<string>(["F32", "F16", "BF16"]);
const TOKENIZER_FILES = [
  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
  "added_tokens.json", "chat_template.jinja", "chat_template.json",
];
const TORCH_DTYPE: Record<FloatDtype, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

interface Input {
  source: TensorSource;
  /** How the config names it (for messages). */
  label: string;
  parameters: Record<string, ParameterSetting>;
}

/** One planned output tensor: its inputs checked, parameters resolved. */
interface PlannedTensor {
  name: string;
  shape: readonly number[];
  outDtype: FloatDtype | undefined;
  /** Rows kept of inputs with a larger vocabulary. */
  elements: number;
  params: Params[];
  global: Params;
  t: number;
  depth: number;
}

export function mergeModels(config: ModelMergeConfig, outDir: string, options: ModelMergeOptions): ModelMergeResult {
  const started = Date.now();
  const warn = options.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const method = getMergeMethod(config.mergeMethod);
  checkParameterNames(config, method, warn);
  if (method.needsBase && !config.baseModel) throw new Error(`base_model: merge_method ${method.name} needs a base model`);
  const entries = config.models.filter((m) => !(method.needsBase && m.model === config.baseModel));
  const count = entries.length;
  if (count < method.minModels || (method.maxModels !== undefined && count > method.maxModels)) {
    const wanted = method.maxModels === method.minModels ? `exactly ${method.minModels}` : `at least ${method.minModels}${method.maxModels ? ` and at most ${method.maxModels}` : ""}`;
    throw new Error(`models: merge_method ${method.name} takes ${wanted} model${method.minModels === 1 && method.maxModels === 1 ? "" : "s"} besides base_model, got ${count}`);
  }

  const opened = new Map<string, TensorSource>();
  const open = (ref: string) => {
    let source = opened.get(ref);
    if (!source) {
      source = openSource(ref);
      opened.set(ref, source);
    }
    return source;
  };
  const output = new OutputDir(outDir, options.overwrite);
  let writer: ShardedSafetensorsWriter | undefined;
  try {
    const base: Input | undefined = config.baseModel ? { source: open(config.baseModel), label: `base_model ${config.baseModel}`, parameters: {} } : undefined;
    const models: Input[] = entries.map((m) => ({
      source: open(m.model), label: `model ${m.model}`, parameters: m.parameters,
    }));
    const inputs = method.needsBase ? [base!, ...models] : models;
    const reference = base ?? models[0]!;
    checkTensorSets(reference, [...(base ? [base] : []), ...models]);
    const tokenizerDir = tokenizerFolder(config, reference.source);
    const numLayers = countLayers(reference.source);
    const plan = reference.source.names.map((name) => planTensor(name, config, method, reference, inputs, models, numLayers, warn));

    writer = new ShardedSafetensorsWriter(output.temp, { maxShardBytes: options.maxShardBytes, metadata: { format: "pt" } });
    const bytesTotal = plan.reduce((sum, p) => sum + inputs.reduce((s, input) => s + input.source.info(p.name)!.byteLength, 0), 0);
    let bytesRead = 0;
    let bytesWritten = 0;
    plan.forEach((p, index) => {
      const refInfo = reference.source.info(p.name)!;
      let data: Uint8Array;
      let dtype: SafetensorsDtype;
      if (p.outDtype === undefined) {
        // Integer and other non-float tensors (buffers, ids) are copied from the reference model.
        data = reference.source.readRaw(p.name);
        dtype = refInfo.dtype;
        bytesRead += inputs.reduce((s, input) => s + input.source.info(p.name)!.byteLength, 0);
      } else {
        const outDtype = p.outDtype;
        const read = (input: Input): TensorInput => {
          const info = input.source.info(p.name)!;
          const raw = input.source.readRaw(p.name);
          bytesRead += raw.byteLength;
          const keep = p.elements * dtypeSize(info.dtype);
          return { data: raw.byteLength > keep ? raw.subarray(0, keep) : raw, dtype: info.dtype as FloatDtype, lora: input.source.loraDelta(p.name) };
        };
        data = mergeWithContext(p.name, () => mergeTensor(options.backend, method, {
          name: p.name,
          shape: p.shape,
          base: method.needsBase ? read(base!) : undefined,
          models: models.map(read),
          params: p.params,
          global: p.global,
          t: p.t,
          depth: p.depth,
          seed: options.seed ?? 0,
          outDtype,
        }));
        dtype = outDtype;
      }
      writer!.add(p.name, dtype, p.shape, data);
      bytesWritten += data.byteLength;
      options.onProgress?.({
        tensorsDone: index + 1, tensorsTotal: plan.length, bytesRead, bytesTotal, elapsedS: (Date.now() - started) / 1000, tensor: p.name,
      });
    });
    writer.finish();
    copyModelFiles(config, reference.source.dir, tokenizerDir, output);
    output.writeFile("mergekit_config.yml", YAML.stringify(config.raw));
    const files = output.commit();
    return { outDir: output.target, files, tensors: plan.length, bytesRead, bytesWritten, seconds: (Date.now() - started) / 1000 };
  } catch (err) {
    writer?.abort();
    output.discard();
    throw err;
  } finally {
    for (const source of opened.values()) source.close();
  }
}

/** Errors while merging a tensor name it (a parameter of the wrong type, a graph the device cannot run). */
function mergeWithContext<T>(tensor: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Error && !err.message.includes(`"${tensor}"`)) err.message = `tensor "${tensor}": ${err.message}`;
    throw err;
  }
}

/**
 * Parameters a method does not take: another method's parameter is ignored with a warning (as
 * mergekit ignores it, so shared configs keep working); a name no method takes is a typo, an error.
 */
function checkParameterNames(config: ModelMergeConfig, method: MergeMethod<unknown>, warn: (m: string) => void): void {
  const global = new Set(method.parameters.map((p) => p.name));
  const perModel = new Set(method.tensorParameters.map((p) => p.name));
  const known = knownParameterNames();
  const takes = [...global, ...perModel].join(", ") || "no parameters";
  const check = (key: string, where: string, accepted: Set<string>) => {
    if (accepted.has(key)) return;
    if (!known.has(key)) throw new Error(`${where}.${key}: unknown parameter (${method.name} takes ${takes})`);
    warn(`${where}.${key} is ignored: ${method.name} does not use it`);
  };
  for (const key of Object.keys(config.parameters)) check(key, "parameters", new Set([...global, ...perModel]));
  config.models.forEach((m, i) => {
    for (const key of Object.keys(m.parameters)) check(key, `models[${i}].parameters`, perModel);
  });
}

/** Every input must hold exactly the reference's tensors. */
function checkTensorSets(reference: Input, inputs: Input[]): void {
  const names = new Set(reference.source.names);
  for (const input of inputs) {
    if (input === reference) continue;
    const missing = reference.source.names.filter((n) => !input.source.info(n));
    if (missing.length) {
      throw new Error(`tensor "${missing[0]}" is in ${reference.label} but missing from ${input.label}` +
        (missing.length > 1 ? ` (and ${missing.length - 1} more: ${missing.slice(1, 4).join(", ")}${missing.length > 4 ? ", …" : ""})` : ""));
    }
    const extra = input.source.names.filter((n) => !names.has(n));
    if (extra.length) {
      throw new Error(`tensor "${extra[0]}" is in ${input.label} but missing from ${reference.label}` +
        (extra.length > 1 ? ` (and ${extra.length - 1} more)` : ""));
    }
  }
}

function countLayers(source: TensorSource): number {
  if (source.dir) {
    try {
      const cfg = JSON.parse(fs.readFileSync(path.join(source.dir, "config.json"), "utf8")) as Record<string, unknown>;
      const text = (cfg.text_config ?? cfg) as Record<string, unknown>;
      for (const key of ["num_hidden_layers", "n_layer", "num_layers"]) {
        if (typeof text[key] === "number") return text[key];
      }
    } catch {
      // no config.json: count the layers in the tensor names
    }
  }
  return Math.max(0, ...source.names.map((n) => (layerIndex(n) ?? -1) + 1));
}

function planTensor(
  name: string, config: ModelMergeConfig, method: MergeMethod<unknown>, reference: Input, inputs: Input[], models: Input[],
  numLayers: number, warn: (m: string) => void,
): PlannedTensor {
  const ref = reference.source.info(name)!;
  const t = gradientPosition(name, numLayers);
  const depth = depthPosition(name, numLayers);
  const elements = ref.shape.reduce((a, b) => a * b, 1);
  const float = FLOAT_DTYPES.has(ref.dtype);
  for (const input of inputs) {
    if (input === reference) continue;
    const info = input.source.info(name)!;
    const same = info.shape.length === ref.shape.length && info.shape.every((n, i) => n === ref.shape[i]);
    if (!same) {
      const onlyRows = info.shape.length === ref.shape.length && info.shape.slice(1).every((n, i) => n === ref.shape[i + 1]);
      if (onlyRows && isVocabularyTensor(name)) {
        if (info.shape[0]! < ref.shape[0]!) {
          throw new Error(`tensor "${name}": vocabulary size ${info.shape[0]} in ${input.label} is smaller than ${ref.shape[0]} in ${reference.label}; ` +
            "models with different vocabularies cannot be merged (align their tokenizers first)");
        }
        // mergekit's rule for embeddings of a larger vocabulary: take the reference-sized submatrix.
        warn(`tensor "${name}": ${input.label} has ${info.shape[0]} rows; using its first ${ref.shape[0]} (the vocabulary of ${reference.label})`);
      } else {
        throw new Error(`tensor "${name}": shape [${info.shape.join(", ")}] in ${input.label} differs from [${ref.shape.join(", ")}] in ${reference.label}`);
      }
    }
    if (FLOAT_DTYPES.has(info.dtype) !== float) {
      throw new Error(`tensor "${name}": dtype ${info.dtype} in ${input.label} cannot be merged with ${ref.dtype} in ${reference.label}`);
    }
    if (info.dtype !== ref.dtype && !config.dtype) {
      throw new Error(`tensor "${name}": dtype ${info.dtype} in ${input.label} differs from ${ref.dtype} in ${reference.label} ` +
        "(set dtype: in the config to merge models stored in different dtypes)");
    }
  }
  if (ref.shape.length > 4) throw new Error(`tensor "${name}": ${ref.shape.length} dims; ggml merges tensors of up to 4`);
  const resolve = (def: ParameterDef, levels: (Record<string, ParameterSetting> | undefined)[], where: string) => {
    for (const level of levels) {
      const setting = level?.[def.name];
      if (setting === undefined) continue;
      const value = evaluateSetting(name, setting, t);
      if (value !== undefined) return value;
    }
    if (def.required) throw new Error(`${where}: parameter ${def.name} is required by ${method.name} (tensor "${name}")`);
    return def.default!;
  };
  const global = Object.fromEntries(method.parameters.map((def) => [def.name, resolve(def, [config.parameters], "parameters")]));
  const params = models.map((m) => Object.fromEntries(method.tensorParameters.map((def) =>
    [def.name, resolve(def, [m.parameters, config.parameters], m.label)])));
  return {
    name,
    shape: ref.shape,
    outDtype: float ? config.outDtype ?? config.dtype ?? (ref.dtype as FloatDtype) : undefined,
    elements,
    params,
    global,
    t,
    depth,
  };
}

/** The folder whose tokenizer files are copied: the reference model's, or tokenizer_source's. */
function tokenizerFolder(config: ModelMergeConfig, reference: TensorSource): string | undefined {
  if (!config.tokenizerSource || config.tokenizerSource === "base") return reference.dir;
  const plus = config.tokenizerSource.lastIndexOf("+");
  const model = plus > 0 && !fs.existsSync(config.tokenizerSource) ? config.tokenizerSource.slice(0, plus) : config.tokenizerSource;
  if (!fs.existsSync(model)) throw new Error(`tokenizer_source: ${config.tokenizerSource} does not exist`);
  return fs.statSync(model).isDirectory() ? model : path.dirname(model);
}

/** config.json (with the output dtype) and generation_config.json of the reference model, and the tokenizer files. */
function copyModelFiles(config: ModelMergeConfig, modelDir: string | undefined, tokenizerDir: string | undefined, output: OutputDir): void {
  if (modelDir) {
    const configFile = path.join(modelDir, "config.json");
    if (fs.existsSync(configFile)) {
      const json = JSON.parse(fs.readFileSync(configFile, "utf8")) as Record<string, unknown>;
      const dtype = config.outDtype ?? config.dtype;
      if (dtype) {
        for (const key of ["torch_dtype", "dtype"]) if (key in json) json[key] = TORCH_DTYPE[dtype];
      }
      output.writeFile("config.json", `${JSON.stringify(json, null, 2)}\n`);
    }
    const generation = path.join(modelDir, "generation_config.json");
    if (fs.existsSync(generation)) output.copyFile(generation);
  }
  if (tokenizerDir) {
    for (const name of TOKENIZER_FILES) {
      const file = path.join(tokenizerDir, name);
      if (fs.existsSync(file)) output.copyFile(file);
    }
  }
}
