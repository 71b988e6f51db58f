// tasktune's public API.
export { Backend, listDevices, type DeviceChoice, type DeviceInfo } from "./engine/backend.ts";
export { Graph, type RopeOptions } from "./engine/graph.ts";
export { TensorStore } from "./engine/store.ts";
export { Tensor, GGML_TYPE, type DType } from "./engine/tensor.ts";
export { crossEntropy, crossEntropyTargets, geluErf, geluTanh, layerNorm, layerNormAffine } from "./engine/compose.ts";
export { NativeAbortError, runSupervised } from "./engine/worker.ts";
export { loadConfig, parseConfig, type ModelConfig, type LlamaFamilyConfig, type Gpt2Config, type BertConfig } from "./io/hf-config.ts";
export { FormatError } from "./io/errors.ts";
export { openCheckpoint, openSafetensors, writeSafetensors, writeShardedSafetensors, ShardedSafetensorsWriter } from "./io/safetensors.ts";
export { Tokenizer, type ChatMessage } from "./io/tokenizer.ts";
export { createModel, loadModel } from "./models/index.ts";
export { Model, IGNORE_INDEX, type Batch, type WeightSource } from "./models/model.ts";
export {
  mergeModels, mergeAdapters, mergeTensor, loadMergeConfig, parseMergeConfig, getMergeMethod, mergeMethodNames, registerMergeMethod,
  evaluateSetting, openSource, truncatedSvd, COMBINATION_TYPES,
  type MergeConfig, type ModelMergeConfig, type AdapterMergeConfig, type CombinationType, type MergeMethod, type MergeInputs,
  type ParameterDef, type Params, type ParameterSetting, type MergeProgress, type ModelMergeOptions, type ModelMergeResult,
  type AdapterMergeOptions, type AdapterMergeResult, type TensorInput, type TensorMergeJob, type TensorSource, type SvdResult,
} from "./merge/index.ts";
