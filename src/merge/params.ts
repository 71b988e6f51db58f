// mergekit's parameter settings: a scalar, a gradient (a list of numbers interpolated over the
// layers), or a list of {filter, value} conditions matched against the tensor name, with
// mergekit's exact rules (mergekit/config.py evaluate_setting) and its per-tensor `t`
// (mergekit/plan.py: layer i of L has t = i / (L - 1); tensors outside the layers have t = 0).

export type ParamValue = number | boolean;
export type Gradient = number[];
export interface ConditionalParameter {
  filter?: string;
  value: ParamValue | Gradient;
}
export type ParameterSetting = ParamValue | Gradient | ConditionalParameter[];

/**
 * The value of a setting for one tensor: undefined when no condition matches (the next, less
 * specific level of the config then applies, as in mergekit).
 */
export function evaluateSetting(tensorName: string, setting: ParameterSetting, t: number): ParamValue | undefined {
  if (typeof setting === "number" || typeof setting === "boolean") return setting;
  if (setting.length === 0) return undefined;
  if (setting.every((e) => typeof e === "number")) {
    const values = setting as number[];
    const scaled = t * (values.length - 1);
    const i0 = Math.trunc(scaled);
    const i1 = Math.min(values.length - 1, i0 + 1);
    const frac = scaled - i0;
    return (1 - frac) * values[i0]! + frac * values[i1]!;
  }
  for (const cond of setting as ConditionalParameter[]) {
    if (cond.filter === undefined || cond.filter === "*" || (tensorName !== "" && tensorName.includes(cond.filter))) {
      return evaluateSetting(tensorName, cond.value, t);
    }
  }
  return undefined;
}

const LAYER_PATTERN = /(?:^|\.)(?:layers|h|block|blocks|layer)\.(\d+)\./;

/** The transformer block a tensor belongs to (model.layers.3.… → 3), or undefined. */
export function layerIndex(tensorName: string): number | undefined {
  const m = LAYER_PATTERN.exec(tensorName);
  return m ? Number(m[1]) : undefined;
}

/** mergekit's interpolation position of a tensor: its layer's fraction of the depth, 0 outside the layers. */
export function gradientPosition(tensorName: string, numLayers: number): number {
  const index = layerIndex(tensorName);
  if (index === undefined) return 0;
  return numLayers > 1 ? index / (numLayers - 1) : 1;
}

const EMBEDDING_PATTERN = /(?:^|\.)(?:embed_tokens|embed_positions|embeddings|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|tok_embeddings)(?:\.|$)/;

/** Input embeddings (vocabulary or position tables), which sit before the first layer. */
export function isInputEmbedding(tensorName: string): boolean {
  return EMBEDDING_PATTERN.test(tensorName);
}

/** Tensors indexed by token id (rows = vocabulary): input embeddings and LM heads. */
export function isVocabularyTensor(tensorName: string): boolean {
  return /(?:^|\.)(?:embed_tokens|wte|word_embeddings|tok_embeddings|lm_head|embed_out)\.weight$/.test(tensorName)
    || tensorName === "output.weight";
}

/**
 * Depth of a tensor for layer-wise scaling (LiNeS): layer i of L at i / (L - 1); input embeddings
 * at 0 (below the first layer); every other tensor outside the layers (final norm, head) at 1.
 */
export function depthPosition(tensorName: string, numLayers: number): number {
  const index = layerIndex(tensorName);
  if (index !== undefined) return numLayers > 1 ? index / (numLayers - 1) : 1;
  return isInputEmbedding(tensorName) ? 0 : 1;
}
