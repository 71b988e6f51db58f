// Model and adapter merging: the public API.
export { mergeModels, type MergeProgress, type ModelMergeOptions, type ModelMergeResult } from "./model-merge.ts";
export { mergeAdapters, type AdapterMergeOptions, type AdapterMergeResult } from "./adapter-merge.ts";
export {
  loadMergeConfig, parseMergeConfig, COMBINATION_TYPES, type AdapterMergeConfig, type CombinationType, type MergeConfig,
  type ModelMergeConfig,
} from "./config.ts";
export {
  getMergeMethod, mergeMethodNames, registerMergeMethod, type MergeInputs, type MergeMethod, type ParameterDef, type Params,
} from "./methods.ts";
export { mergeTensor, type TensorInput, type TensorMergeJob } from "./tensor-merge.ts";
export { evaluateSetting, type ParameterSetting } from "./params.ts";
export { openSource, type TensorSource } from "./sources.ts";
export { truncatedSvd, type SvdResult } from "./svd.ts";
