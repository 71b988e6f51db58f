import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, parseConfig, type ModelConfig } from "../src/io/hf-config.ts";
import { FormatError } from "../src/io/errors.ts";

const FIXTURES = new URL("./fixtures/hf/", import.meta.url).pathname;

function expectFamily<F extends ModelConfig["family"]>(config: ModelConfig, family: F): Extract<ModelConfig, { family: F }> {
  assert.equal(config.family, family);
  return config as Extract<ModelConfig, { family: F }>;
}

/** Asserts a FormatError for `file` whose message contains every one of `fragments`. */
function assertFormatError(run: () => unknown, file: string, ...fragments: string[]): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof FormatError, `expected FormatError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`${file}: `), error.message);
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), `"${error.message}" lacks "${fragment}"`);
    return true;
  });
}

// Real configs as published on the Hub (trimmed of keys the parser ignores), in the pre-5.x format.
const QWEN2_0_5B = {
  architectures: ["Qwen2ForCausalLM"],
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: "silu",
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const MISTRAL_7B_V03 = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  vocab_size: 32768,
};

const LLAMA_3_2_1B = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: "silu",
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  vocab_size: 128256,
};

test("llama-tiny fixture (transformers 5 rope_parameters format)", () => {
  const config = expectFamily(loadConfig(join(FIXTURES, "llama-tiny")), "llama");
  assert.deepEqual(config, {
    family: "llama",
    modelType: "llama",
    vocabSize: 512,
    hiddenSize: 64,
    intermediateSize: 172,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: { type: "none" },
    maxPositionEmbeddings: 256,
    attentionBias: { qkv: false, output: false },
    mlpBias: false,
    tieWordEmbeddings: false,
    slidingWindow: undefined,
    hiddenAct: "silu",
    bosTokenId: 0,
    eosTokenIds: [0],
    padTokenId: 1,
  });
});

test("gpt2-tiny fixture", () => {
  const config = expectFamily(loadConfig(join(FIXTURES, "gpt2-tiny")), "gpt2");
  assert.deepEqual(config, {
    family: "gpt2",
    modelType: "gpt2",
    vocabSize: 512,
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    intermediateSize: 256,
    maxPositions: 256,
    layerNormEps: 1e-5,
    activation: "gelu_new",
    scaleAttnWeights: true,
    scaleAttnByInverseLayerIdx: false,
    reorderAndUpcastAttn: false,
    tieWordEmbeddings: true,
    bosTokenId: 0,
    eosTokenIds: [0],
  });
});

test("bert-tiny fixture", () => {
  const config = expectFamily(loadConfig(join(FIXTURES, "bert-tiny")), "bert");
  assert.deepEqual(config, {
    family: "bert",
    modelType: "bert",
    vocabSize: 512,
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    intermediateSize: 128,
    maxPositions: 256,
    typeVocabSize: 2,
    layerNormEps: 1e-12,
    hiddenAct: "gelu",
    numLabels: 3,
    labelNames: ["LABEL_0", "LABEL_1", "LABEL_2"],
    problemType: "single_label_classification",
    classifierDropout: 0.1,
    architectures: ["BertForSequenceClassification"],
    positionEmbeddingType: "absolute",
    padTokenId: 1,
  });
});

test("qwen2: q/k/v bias without an attention_bias key, sliding window off unless use_sliding_window", () => {
  const config = expectFamily(parseConfig(QWEN2_0_5B, "qwen2/config.json"), "llama");
  assert.equal(config.modelType, "qwen2");
  assert.deepEqual(config.attentionBias, { qkv: true, output: false });
  assert.equal(config.mlpBias, false);
  assert.equal(config.headDim, 64);
  assert.equal(config.numKvHeads, 2);
  assert.equal(config.ropeTheta, 1e6);
  assert.deepEqual(config.ropeScaling, { type: "none" });
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.slidingWindow, undefined);
  assert.equal(config.padTokenId, undefined);
  assert.deepEqual(config.eosTokenIds, [151645]);

  const windowed = expectFamily(parseConfig({ ...QWEN2_0_5B, use_sliding_window: true }, "qwen2/config.json"), "llama");
  assert.equal(windowed.slidingWindow, 32768);
  // Qwen2 ignores attention_bias in transformers, so a stray key must not change the layout.
  const stray = expectFamily(parseConfig({ ...QWEN2_0_5B, attention_bias: false }, "qwen2/config.json"), "llama");
  assert.deepEqual(stray.attentionBias, { qkv: true, output: false });
});

test("mistral: no biases, null sliding window, transformers defaults for missing keys", () => {
  const config = expectFamily(parseConfig(MISTRAL_7B_V03, "mistral/config.json"), "llama");
  assert.equal(config.modelType, "mistral");
  assert.deepEqual(config.attentionBias, { qkv: false, output: false });
  assert.equal(config.headDim, 128);
  assert.equal(config.rmsNormEps, 1e-5);
  assert.equal(config.slidingWindow, undefined);

  const { sliding_window: _, rms_norm_eps: __, rope_theta: ___, ...sparse } = MISTRAL_7B_V03;
  const defaults = expectFamily(parseConfig(sparse, "mistral/config.json"), "llama");
  assert.equal(defaults.slidingWindow, 4096);
  assert.equal(defaults.rmsNormEps, 1e-6);
  assert.equal(defaults.ropeTheta, 10000);
});

test("llama: explicit head_dim, default kv heads, attention_bias covers all four projections", () => {
  const config = expectFamily(
    parseConfig(
      { ...LLAMA_3_2_1B, num_key_value_heads: undefined, head_dim: 48, hidden_size: 100, attention_bias: true, mlp_bias: true },
      "llama/config.json",
    ),
    "llama",
  );
  assert.equal(config.numKvHeads, 32);
  assert.equal(config.headDim, 48);
  assert.deepEqual(config.attentionBias, { qkv: true, output: true });
  assert.equal(config.mlpBias, true);
});

test("llama3 rope_scaling in the old format", () => {
  const config = expectFamily(parseConfig(LLAMA_3_2_1B, "llama3/config.json"), "llama");
  assert.equal(config.ropeTheta, 500000);
  assert.deepEqual(config.ropeScaling, {
    type: "llama3",
    factor: 32,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assert.deepEqual(config.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(config.headDim, 64);
  assert.equal(config.tieWordEmbeddings, true);
});

test("llama3 rope in the transformers 5 rope_parameters format", () => {
  const { rope_scaling, rope_theta, ...rest } = LLAMA_3_2_1B;
  const config = expectFamily(
    parseConfig({ ...rest, rope_parameters: { ...rope_scaling, rope_theta } }, "llama3/config.json"),
    "llama",
  );
  assert.equal(config.ropeTheta, 500000);
  assert.equal(config.ropeScaling.type, "llama3");
});

test("linear, dynamic and yarn rope scaling, old `type` key and new `rope_type` key", () => {
  const linear = expectFamily(parseConfig({ ...LLAMA_3_2_1B, rope_scaling: { type: "linear", factor: 2 } }, "c.json"), "llama");
  assert.deepEqual(linear.ropeScaling, { type: "linear", factor: 2 });
  const dynamic = expectFamily(parseConfig({ ...LLAMA_3_2_1B, rope_scaling: { rope_type: "dynamic", factor: 4 } }, "c.json"), "llama");
  assert.deepEqual(dynamic.ropeScaling, { type: "dynamic", factor: 4 });
  const none = expectFamily(parseConfig({ ...LLAMA_3_2_1B, rope_scaling: null }, "c.json"), "llama");
  assert.deepEqual(none.ropeScaling, { type: "none" });

  // Qwen2.5's recommended long-context setting.
  const yarn = expectFamily(
    parseConfig(
      { ...QWEN2_0_5B, max_position_embeddings: 131072, rope_scaling: { type: "yarn", factor: 4, original_max_position_embeddings: 32768 } },
      "c.json",
    ),
    "llama",
  );
  assert.deepEqual(yarn.ropeScaling, {
    type: "yarn",
    factor: 4,
    originalMaxPositionEmbeddings: 32768,
    betaFast: 32,
    betaSlow: 1,
    attentionFactor: 0.1 * Math.log(4) + 1,
    truncate: true,
  });

  // Missing factor and original length fall back the way transformers does; explicit attention_factor wins.
  const derived = expectFamily(
    parseConfig(
      {
        ...QWEN2_0_5B,
        max_position_embeddings: 65536,
        original_max_position_embeddings: 16384,
        rope_parameters: { rope_type: "yarn", rope_theta: 5e5, beta_fast: 16, attention_factor: 1.5, truncate: false },
      },
      "c.json",
    ),
    "llama",
  );
  assert.equal(derived.ropeTheta, 5e5);
  assert.deepEqual(derived.ropeScaling, {
    type: "yarn",
    factor: 4,
    originalMaxPositionEmbeddings: 16384,
    betaFast: 16,
    betaSlow: 1,
    attentionFactor: 1.5,
    truncate: false,
  });

  const mscaled = expectFamily(
    parseConfig({ ...LLAMA_3_2_1B, rope_scaling: { rope_type: "yarn", factor: 40, mscale: 1, mscale_all_dim: 0.5 } }, "c.json"),
    "llama",
  );
  assert.ok(mscaled.ropeScaling.type === "yarn");
  assert.equal(mscaled.ropeScaling.attentionFactor, (0.1 * Math.log(40) + 1) / (0.05 * Math.log(40) + 1));
});

test("gpt2 and bert: optional fields and their defaults", () => {
  const gpt2 = expectFamily(
    parseConfig(
      { model_type: "gpt2", vocab_size: 100, n_embd: 32, n_head: 2, n_layer: 1, n_positions: 64, n_inner: 48, activation_function: "relu" },
      "gpt2/config.json",
    ),
    "gpt2",
  );
  assert.equal(gpt2.intermediateSize, 48);
  assert.equal(gpt2.activation, "relu");
  assert.equal(gpt2.tieWordEmbeddings, true);
  assert.deepEqual(gpt2.eosTokenIds, []);

  const bertBase = { model_type: "bert", vocab_size: 100, hidden_size: 32, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 64, max_position_embeddings: 64 };
  const bert = expectFamily(parseConfig(bertBase, "bert/config.json"), "bert");
  assert.equal(bert.numLabels, 2);
  assert.deepEqual(bert.labelNames, ["LABEL_0", "LABEL_1"]);
  assert.equal(bert.padTokenId, 0);
  assert.equal(bert.problemType, undefined);
  assert.equal(bert.classifierDropout, 0.1);
  assert.deepEqual(bert.architectures, []);

  const regression = expectFamily(
    parseConfig({ ...bertBase, num_labels: 1, problem_type: "regression", classifier_dropout: 0.3, pad_token_id: null }, "bert/config.json"),
    "bert",
  );
  assert.equal(regression.numLabels, 1);
  assert.equal(regression.classifierDropout, 0.3);
  assert.equal(regression.padTokenId, undefined);

  const named = expectFamily(parseConfig({ ...bertBase, id2label: { "1": "positive", "0": "negative" }, num_labels: 5 }, "bert/config.json"), "bert");
  assert.deepEqual(named.labelNames, ["negative", "positive"]);
  assert.equal(named.numLabels, 2);
});

test("loadConfig: missing file and invalid JSON name the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "hf-config-"));
  try {
    const file = join(dir, "config.json");
    assertFormatError(() => loadConfig(dir), file, "not found");
    writeFileSync(file, "{ \"model_type\": \"llama\",");
    assertFormatError(() => loadConfig(dir), file, "invalid JSON");
    writeFileSync(file, "[1, 2]");
    assertFormatError(() => loadConfig(dir), file, "expected a JSON object");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("errors name the file and the field", () => {
  const file = "model/config.json";
  const cases: [unknown, ...string[]][] = [
    [{ ...LLAMA_3_2_1B, model_type: "falcon" }, '"model_type"', "falcon", "llama, mistral, qwen2, gpt2, bert"],
    [{ ...LLAMA_3_2_1B, model_type: undefined }, '"model_type"', "missing"],
    [{ ...LLAMA_3_2_1B, hidden_size: undefined }, '"hidden_size"', "missing"],
    [{ ...LLAMA_3_2_1B, hidden_size: "2048" }, '"hidden_size"', 'expected a positive integer', 'string "2048"'],
    [{ ...LLAMA_3_2_1B, num_hidden_layers: 2.5 }, '"num_hidden_layers"', "positive integer"],
    [{ ...LLAMA_3_2_1B, tie_word_embeddings: "yes" }, '"tie_word_embeddings"', "true or false"],
    [{ ...LLAMA_3_2_1B, hidden_size: 2050 }, '"num_attention_heads"', "not divisible"],
    [{ ...LLAMA_3_2_1B, num_key_value_heads: 5 }, '"num_key_value_heads"', "not divisible"],
    [{ ...LLAMA_3_2_1B, hidden_act: "gelu" }, '"hidden_act"', "gelu", "silu"],
    [{ ...LLAMA_3_2_1B, rope_scaling: { rope_type: "longrope", factor: 2 } }, '"rope_scaling.rope_type"', "longrope"],
    [{ ...LLAMA_3_2_1B, rope_scaling: { rope_type: "llama3", factor: 8 } }, '"rope_scaling.low_freq_factor"', "missing"],
    [{ ...LLAMA_3_2_1B, rope_parameters: { rope_type: "linear", rope_theta: 1e4 } }, '"rope_parameters.factor"', "missing"],
    [{ ...LLAMA_3_2_1B, rope_scaling: "linear" }, '"rope_scaling"', "expected an object"],
    [{ ...LLAMA_3_2_1B, eos_token_id: [1, "2"] }, '"eos_token_id"', "token ids"],
    [{ ...LLAMA_3_2_1B, rms_norm_eps: -1 }, '"rms_norm_eps"', "positive"],
    [{ model_type: "gpt2", vocab_size: 10, n_embd: 30, n_head: 4, n_layer: 1, n_positions: 8 }, '"n_head"', "not divisible"],
    [{ model_type: "gpt2", vocab_size: 10, n_embd: 32, n_head: 4, n_layer: 1 }, '"n_positions"', "missing"],
    [{ model_type: "bert", vocab_size: 10, hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 8, max_position_embeddings: 8, position_embedding_type: "relative_key" }, '"position_embedding_type"', "relative_key", "absolute"],
    [{ model_type: "bert", vocab_size: 10, hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 8, max_position_embeddings: 8, problem_type: "ranking" }, '"problem_type"', "ranking"],
    [{ model_type: "bert", vocab_size: 10, hidden_size: 8, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 8, max_position_embeddings: 8, id2label: { "0": "a", "2": "b" } }, '"id2label.2"', "0..1"],
  ];
  for (const [json, ...fragments] of cases) {
    assertFormatError(() => parseConfig(json, file), file, ...fragments);
  }
});
