// tasktune's public API.
export { Backend, listDevices, type DeviceChoice, type DeviceInfo } from "./engine/backend.ts";
export { Graph, type RopeOptions } from "./engine/graph.ts";
export { TensorStore } from "./engine/store.ts";
export { Tensor, GGML_TYPE, type DType } from "./engine/tensor.ts";
export { crossEntropy, crossEntropyTargets, geluErf, geluTanh, layerNorm, layerNormAffine, type CrossEntropyInputs, type LossBalance } from "./engine/compose.ts";
export { NativeAbortError, runSupervised } from "./engine/worker.ts";
export { loadConfig, parseConfig, type ModelConfig, type LlamaFamilyConfig, type Gpt2Config, type BertConfig } from "./io/hf-config.ts";
export { FormatError } from "./io/errors.ts";
export { openCheckpoint, openSafetensors, writeSafetensors, writeShardedSafetensors, ShardedSafetensorsWriter } from "./io/safetensors.ts";
export { Tokenizer, type ChatMessage } from "./io/tokenizer.ts";
export { createModel, loadModel } from "./models/index.ts";
export { Model, IGNORE_INDEX, type Batch, type WeightSource, type LossOptions, type LossBatch } from "./models/model.ts";
export {
  mergeModels, mergeAdapters, mergeTensor, loadMergeConfig, parseMergeConfig, getMergeMethod, mergeMethodNames, registerMergeMethod,
  evaluateSetting, openSource, truncatedSvd, COMBINATION_TYPES,
  type MergeConfig, type ModelMergeConfig, type AdapterMergeConfig, type CombinationType, type MergeMethod, type MergeInputs,
  type ParameterDef, type Params, type ParameterSetting, type MergeProgress, type ModelMergeOptions, type ModelMergeResult,
  type AdapterMergeOptions, type AdapterMergeResult, type TensorInput, type TensorMergeJob, type TensorSource, type SvdResult,
} from "./merge/index.ts";
export {
  exportModel, exportModelGguf, exportLoraGguf, readLoraGguf, exportSafetensors, exportPeft, hfConfigJson, openAdapter, modelWeights,
  hfTokenizerMetadata, ggufTokenizerMetadata, readTokenizerSource, tensorDtype, EXPORT_TARGETS, GGUF_MODEL_DTYPES, GGUF_LORA_DTYPES, SAFETENSORS_DTYPES,
  type ExportOptions, type ExportResult, type ExportTarget, type GgufModelDtype, type GgufModelExport, type GgufExportResult, type GgufLoraDtype,
  type GgufLoraExport, type SafetensorsExport, type SafetensorsExportDtype,
} from "./export/index.ts";
export { GgufWeights, openGgufWeights, loadGgufModel, loadGgufTokenizer, loadTokenizerFor, isGgufPath } from "./models/gguf-loader.ts";
export {
  tensorMappings, ggufArchFor, configFromGguf, tokenizerMetadata, tokenizerJsonFromGguf, detectPreTokenizer, permuteRows, toGgufLayout, fromGgufLayout,
  type TensorMapping, type TensorLayout, type GgufArch, type TokenizerSource,
} from "./io/gguf-names.ts";
export {
  evaluateTasks, evaluateCheckpoint, formatResultsTable, generationMetric, isAdapterDir, modelMaxLength,
  type EvalOptions, type EvalResults, type TaskResult, type MetricValue, type Sample,
} from "./eval/run.ts";
export {
  compareResults, evaluateForgetting, forgettingTables, forgettingSummary, formatForgettingTable, writeForgettingReport,
  type ForgettingReport, type ForgettingRow, type ForgettingRun,
} from "./eval/forgetting.ts";
export { loadTask, parseTask, resolveTasks, builtinTaskNames, taskSchema, BUILTIN_TASK_DIR, type TaskConfig, type TaskYaml, type MetricSpec } from "./eval/tasks/config.ts";
export { loadDocuments, type TaskDocument } from "./eval/tasks/documents.ts";
export { promptParts, renderPrompt, type PromptParts } from "./eval/tasks/prompts.ts";
export { FewShotSampler } from "./eval/fewshot.ts";
export { RowTemplate } from "./eval/template.ts";
export {
  NORMALIZERS, NORMALIZER_NAMES, normalize, exactMatch, tokenF1, rougeL, lcsLength, compileExtractor, lastNumber, EXTRACTION_PRESETS,
  GSM8K_ANSWER, INVALID_ANSWER, multipleChoiceScores, meanWithStderr, perplexity, bitsPerByte, METRICS_BY_OUTPUT_TYPE, METRIC_NAMES,
  type NormalizerName, type ExtractionSpec, type Extractor, type Aggregate, type OutputType, type MetricName,
} from "./eval/metrics.ts";
export { LoraAdapter, type LoraModule } from "./adapters/lora.ts";
export { loraConfig, readLoraConfig, loraConfigJson, type LoraConfig, type LoraInit, type LoraBias } from "./adapters/peft-config.ts";
export { saveAdapter, loadAdapter } from "./adapters/peft-io.ts";
export { readRows, type Row } from "./data/records.ts";
export { encodeRows, type Example, type RowShape } from "./data/examples.ts";
export { loadDataset, type Dataset, type DatasetOptions } from "./data/dataset.ts";
export { BatchSchedule, evalBatches, batchingTokenIds, type BatchMode, type ScheduledBatch } from "./data/batches.ts";
export { MixtureSchedule, mixingRates, type MixingStrategy, type MixtureTask, type MixtureBatch } from "./data/mixture.ts";
export { SYNTHETIC_TASKS, syntheticRows, writeSyntheticTask, parseSyntheticOptions, type SyntheticTask, type SyntheticRow } from "./data/synthetic.ts";
export { Trainer, TRAIN_DEFAULTS, latestCheckpoint, NonFiniteLossError, type TrainOptions, type BatchSource, type LabeledBatch, type EvalSet, type StepRecord, type TrainHooks } from "./train/trainer.ts";
export { AdamW, ADAMW_DEFAULTS, type AdamWOptions, type NamedParam } from "./train/optimizer.ts";
export { learningRate, type ScheduleKind } from "./train/schedule.ts";
export { loadTrainConfig, parseTrainConfig, trainConfigSchema, trainingTasks, type TrainConfig, type TrainingTask } from "./train/config.ts";
export { runTraining, SUMMARY_FILE, type RunResult, type RunSummary, type RunOptions } from "./train/run.ts";
export { loadSuite, runComparison, formatComparison, summarizeRuns, type Suite, type Comparison } from "./train/compare.ts";
export { writeReport, renderReport, MetricsLog, readMetrics, METRICS_FILE, type MetricsRecord, type ReportInput, type ReportTable, type ScatterChart } from "./report/index.ts";
