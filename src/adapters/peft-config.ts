// PEFT's LoraConfig (adapter_config.json): the fields tasktune honours, their defaults as in
// peft.LoraConfig, and PEFT's rule for which modules a config targets.
import fs from "node:fs";
import path from "node:path";
import { FormatError } from "../io/errors.ts";

export type LoraInit = true | false | "gaussian";
export type LoraBias = "none" | "all" | "lora_only";

export interface LoraConfig {
  peftType: "LORA";
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Module-name suffixes, or one regular expression matched against the full module name. */
  targetModules: string[] | string;
  layersToTransform?: number[];
  layersPattern?: string[];
  modulesToSave?: string[];
  bias: LoraBias;
  useRslora: boolean;
  useDora: boolean;
  /** PEFT sets this for Conv1D layers (GPT-2), whose weights are stored [in, out]; LoRA's A and B keep their shapes. */
  fanInFanOut: boolean;
  initLoraWeights: LoraInit;
  /** Per-module overrides of r and alpha, keyed by a name suffix or regex as in PEFT. */
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  taskType?: string;
  baseModelNameOrPath?: string | null;
}

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";

/** PEFT's defaults for what a user leaves out. */
export function loraConfig(partial: Partial<LoraConfig> & Pick<LoraConfig, "targetModules">): LoraConfig {
  const config: LoraConfig = {
    peftType: "LORA", r: 8, loraAlpha: 8, loraDropout: 0, bias: "none", useRslora: false, useDora: false, fanInFanOut: false,
    initLoraWeights: true, rankPattern: {}, alphaPattern: {}, ...partial,
  };
  validate(config, "lora config");
  return config;
}

function validate(c: LoraConfig, file: string): void {
  const fail = (field: string, message: string): never => {
    throw new FormatError(file, `${field}: ${message}`);
  };
  if (!Number.isInteger(c.r) || c.r < 1) fail("r", `must be a positive integer, got ${c.r}`);
  if (!Number.isFinite(c.loraAlpha)) fail("lora_alpha", `must be a number, got ${c.loraAlpha}`);
  if (!(c.loraDropout >= 0 && c.loraDropout < 1)) fail("lora_dropout", `must be in [0, 1), got ${c.loraDropout}`);
  if (!["none", "all", "lora_only"].includes(c.bias)) fail("bias", `must be none, all or lora_only, got ${c.bias}`);
  if (![true, false, "gaussian"].includes(c.initLoraWeights)) fail("init_lora_weights", `must be true, false or "gaussian", got ${JSON.stringify(c.initLoraWeights)}`);
  if (typeof c.targetModules !== "string" && (!Array.isArray(c.targetModules) || c.targetModules.length === 0)) {
    fail("target_modules", "must be a non-empty list of module names or a regex string");
  }
}

/** Reads adapter_config.json, refusing PEFT types and options tasktune would silently ignore. */
export function readLoraConfig(dir: string): LoraConfig {
  const file = path.join(dir, ADAPTER_CONFIG);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new FormatError(file, (err as NodeJS.ErrnoException).code === "ENOENT" ? "not found" : `invalid JSON: ${(err as Error).message}`);
  }
  if (raw.peft_type !== "LORA") throw new FormatError(file, `peft_type ${JSON.stringify(raw.peft_type)} is not supported (LORA is)`);
  for (const unsupported of ["fan_in_fan_out_override", "use_qalora", "lora_bias", "layer_replication", "target_parameters", "trainable_token_indices", "alora_invocation_tokens"]) {
    const v = raw[unsupported];
    if (v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0)) {
      throw new FormatError(file, `${unsupported}: ${JSON.stringify(v)} is not supported`);
    }
  }
  const layersPattern = raw.layers_pattern;
  const config: LoraConfig = loraConfig({
    r: raw.r as number ?? 8,
    loraAlpha: raw.lora_alpha as number ?? 8,
    loraDropout: raw.lora_dropout as number ?? 0,
    targetModules: raw.target_modules as string[] | string,
    layersToTransform: raw.layers_to_transform === null || raw.layers_to_transform === undefined ? undefined
      : ([] as number[]).concat(raw.layers_to_transform as number | number[]),
    layersPattern: layersPattern === null || layersPattern === undefined ? undefined : ([] as string[]).concat(layersPattern as string | string[]),
    modulesToSave: (raw.modules_to_save as string[] | null) ?? undefined,
    bias: (raw.bias as LoraBias) ?? "none",
    useRslora: Boolean(raw.use_rslora),
    useDora: Boolean(raw.use_dora),
    fanInFanOut: Boolean(raw.fan_in_fan_out),
    initLoraWeights: (raw.init_lora_weights as LoraInit) ?? true,
    rankPattern: (raw.rank_pattern as Record<string, number>) ?? {},
    alphaPattern: (raw.alpha_pattern as Record<string, number>) ?? {},
    taskType: raw.task_type as string | undefined,
    baseModelNameOrPath: raw.base_model_name_or_path as string | null | undefined,
  });
  return config;
}

/** adapter_config.json as PEFT writes it, so that PeftModel.from_pretrained loads it unchanged. */
export function loraConfigJson(c: LoraConfig): Record<string, unknown> {
  return {
    alpha_pattern: c.alphaPattern,
    base_model_name_or_path: c.baseModelNameOrPath ?? null,
    bias: c.bias,
    fan_in_fan_out: c.fanInFanOut,
    inference_mode: true,
    init_lora_weights: c.initLoraWeights,
    layers_pattern: c.layersPattern ?? null,
    layers_to_transform: c.layersToTransform ?? null,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    modules_to_save: c.modulesToSave ?? null,
    peft_type: "LORA",
    r: c.r,
    rank_pattern: c.rankPattern,
    target_modules: c.targetModules,
    task_type: c.taskType ?? null,
    use_dora: c.useDora,
    use_rslora: c.useRslora,
  };
}

const DEFAULT_LAYER_PATTERNS = ["layers", "h", "block", "blocks", "layer"];

/** PEFT's check_target_module_exists: regex full match, or exact name / dotted suffix. */
export function targetsModule(c: LoraConfig, module: string): boolean {
  const named = typeof c.targetModules === "string"
    ? new RegExp(`^(?:${c.targetModules})$`).test(module)
    : c.targetModules.some((t) => module === t || module.endsWith(`.${t}`));
  if (!named || !c.layersToTransform) return named;
  const patterns = c.layersPattern ?? DEFAULT_LAYER_PATTERNS;
  for (const p of patterns) {
    const m = new RegExp(`(?:^|\\.)${p}\\.(\\d+)\\.`).exec(module);
    if (m) return c.layersToTransform.includes(Number(m[1]));
  }
  return false;
}

/** rank_pattern / alpha_pattern lookup: the first key that matches the module as a suffix or regex. */
export function patternValue(pattern: Record<string, number>, module: string, fallback: number): number {
  for (const [key, value] of Object.entries(pattern)) {
    if (module === key || module.endsWith(`.${key}`) || new RegExp(`(^|\\.)${key}$`).test(module)) return value;
  }
  return fallback;
}
