// What every architecture shares: Hugging Face tensor names mapped one to one onto ggml tensors in
// a store, a forward graph builder, and the Hugging Face loss. Every projection goes through
// `Model.linear`, the one seam where adapters (LoRA and friends) attach to a module.
import type { Backend } from "../engine/backend.ts";
import { crossEntropy, crossEntropyTargets, type CrossEntropyInputs, type LossBalance } from "../engine/compose.ts";
import { Graph } from "../engine/graph.ts";
import type { KvCache } from "./kv-cache.ts";
import { TensorStore } from "../engine/store.ts";
import { fromTorchShape, GGML_TYPE, type DType, type HostArray, type Tensor } from "../engine/tensor.ts";
import { seededNormal } from "../engine/random.ts";
import { quantize } from "../io/gguf.ts";
import type { ModelConfig } from "../io/hf-config.ts";

/** A checkpoint's tensors by Hugging Face name (io's safetensors Checkpoint, GGUF, ...). */
export interface WeightSource {
  /** Names the file(s) in error messages. */
  readonly path: string;
  /** PyTorch-order shapes by tensor name. */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>;
  readF32(name: string): Float32Array;
}

export interface ParameterSpec {
  /** Hugging Face state-dict name, e.g. model.layers.0.self_attn.q_proj.weight. */
  name: string;
  /** PyTorch-order shape. */
  shape: number[];
}

/** One batch of token sequences, row-major [batch, seq] like the tensors transformers takes. */
export interface Batch {
  batchSize: number;
  seqLen: number;
  inputIds: Int32Array;
  /** 1 for real tokens, 0 for padding; all ones when absent. */
  attentionMask?: Int32Array;
  tokenTypeIds?: Int32Array;
  /** Position of each token, [batch, seq]; 0..seq-1 in every row when absent (no left padding). */
  positions?: Int32Array;
}

/** How the loss averages over tasks (see crossEntropy); one task, token mean by default. */
export interface LossOptions {
  tasks?: number;
  balance?: LossBalance;
  focalGamma?: number;
}

/** What a loss is computed from: unshifted labels [batchSize, seqLen] (or [batchSize] for classification) and each row's task. */
export interface LossBatch {
  labels: Int32Array;
  rowTasks?: Int32Array;
}

/** Where a forward pass reads and appends keys and values when decoding with a KV cache. */
export interface CacheWindow {
  cache: KvCache;
  /** Tokens already in the cache; the pass writes positions past .. past + seqLen - 1. */
  past: number;
}

/** Graph inputs of a forward pass, filled from a Batch after the graph is allocated. */
export interface ForwardInputs {
  readonly values: [Tensor, (batch: Batch) => HostArray][];
}

export interface ForwardResult {
  /** [classes or vocab, positions] in ggml order: torch [batch, seq, vocab] or [batch, labels]. */
  logits: Tensor;
  inputs: ForwardInputs;
}

export type LinearFn = (g: Graph, module: string, x: Tensor) => Tensor;

export const IGNORE_INDEX = -100;

const EMBEDDING = /(embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings)\.weight$/;

export abstract class Model<C extends ModelConfig = ModelConfig> {
  readonly store: TensorStore;
  private readonly params = new Map<string, Tensor>();
  /** Parameters the last load() initialised because the checkpoint lacked them (fresh heads). */
  newlyInitialized: string[] = [];
  /** Replacements for Model.linear by module name (adapters install themselves here). */
  readonly linearOverrides = new Map<string, LinearFn>();

  protected constructor(readonly backend: Backend, readonly config: C, readonly weightDtype: DType) {
    this.store = new TensorStore(backend, `${config.modelType} weights`);
    const block = backend.ggml.ggml_blck_size(GGML_TYPE[weightDtype]);
    for (const spec of this.parameterSpecs()) {
      const ne = fromTorchShape(spec.shape);
      // 1-D tensors (norms, biases) stay f32: they are tiny and ggml's broadcast ops want f32.
      // Rows a quantized type cannot block (e.g. 172 wide for 32-element blocks) stay f32 too,
      // as llama.cpp's quantizer falls back for such tensors.
      const dtype = spec.shape.length === 1 || ne[0] % block !== 0 ? "f32" : weightDtype;
      this.params.set(spec.name, this.store.tensor(dtype, ne, spec.name));
    }
    this.store.allocate();
  }

  /** Every tensor of the Hugging Face state dict this architecture reads, in order. */
  abstract parameterSpecs(): ParameterSpec[];

  /** Builds logits for a batch of the given shape (after `window.past` cached tokens when decoding). */
  abstract forward(g: Graph, batchSize: number, seqLen: number, window?: CacheWindow): ForwardResult;

  /**
   * State-dict entries a checkpoint may carry that are not parameters (buffers such as
   * rotary inv_freq or position_ids) and tied weights that may be absent.
   */
  protected ignorable(name: string): boolean {
    void name;
    return false;
  }

  /** Tensors allowed to be missing, with the parameter they are tied to. */
  protected tiedTo(name: string): string | undefined {
    void name;
    return undefined;
  }

  /** Values for a parameter the checkpoint lacks but that starts fresh (a new task head). */
  protected initialValues(name: string, elements: number): Float32Array | undefined {
    void name;
    void elements;
    return undefined;
  }

  get kind(): "causal-lm" | "sequence-classification" {
    return "causal-lm";
  }

  param(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`${this.config.modelType} has no parameter ${name}`);
    return t;
  }

  hasParam(name: string): boolean {
    return this.params.has(name);
  }

  get parameterNames(): string[] {
    return [...this.params.keys()];
  }

  /**
   * Node capacity for a graph over this model: forward, loss and backward stay within a few dozen
   * nodes per parameter tensor, plus a constant for inputs and the loss.
   */
  get graphNodes(): number {
    return 48 * this.params.size + 4096;
  }

  get parameterCount(): number {
    let n = 0;
    for (const t of this.params.values()) n += t.elements;
    return n;
  }

  /** Loads every parameter from a checkpoint, checking names and shapes against the config. */
  load(source: WeightSource): void {
    const available = new Set(source.tensors.keys());
    const missing: string[] = [];
    const initialized: string[] = [];
    for (const [name, tensor] of this.params) {
      const from = available.has(name) ? name : this.tiedTo(name);
      if (!from || !available.has(from)) {
        const fresh = this.initialValues(name, tensor.elements);
        if (fresh) {
          initialized.push(name);
          this.setParam(tensor, fresh);
        } else {
          missing.push(name);
        }
        continue;
      }
      const expected = tensor.torchShape.join(", ");
      const actual = source.tensors.get(from)!.shape.join(", ");
      if (expected !== actual) {
        throw new Error(`${source.path}: tensor ${from} has shape [${actual}] but the config implies [${expected}]`);
      }
      this.setParam(tensor, source.readF32(from));
    }
    if (missing.length) throw new Error(`${source.path}: missing tensors: ${missing.join(", ")}`);
    this.newlyInitialized = initialized;
    const unexpected = [...available].filter((n) => !this.params.has(n) && !this.ignorable(n));
    if (unexpected.length) {
      throw new Error(`${source.path}: tensors this ${this.config.modelType} model does not use: ${unexpected.slice(0, 20).join(", ")}` +
        (unexpected.length > 20 ? ` and ${unexpected.length - 20} more` : ""));
    }
  }

  /**
   * Fresh weights as transformers' _init_weights draws them: N(0, std) for matrices, ones for
   * norm scales, zeros for biases and norm shifts.
   */
  initialize(seed: number, std = 0.02): void {
    const normal = seededNormal(seed);
    for (const [name, tensor] of this.params) {
      const n = tensor.elements;
      if (tensor.ne[1] > 1) this.setParam(tensor, Float32Array.from({ length: n }, () => normal() * std));
      else this.setParam(tensor, new Float32Array(n).fill(/(norm|LayerNorm|ln_\w+)\.weight$/.test(name) ? 1 : 0));
    }
  }

  /** Writes f32 values into a parameter, converting to its storage dtype. */
  setParam(tensor: Tensor, values: Float32Array): void {
    if (values.length !== tensor.elements) {
      throw new Error(`${tensor.name}: expected ${tensor.elements} values, got ${values.length}`);
    }
    tensor.setAll(tensor.dtype === "f32" ? values : quantize(values, tensor.ne, tensor.dtype, this.backend.ggml));
  }

  /** y = x W^T + b for the module's HF weight [out, in] (ggml [in, out]); adapters may override. */
  linear(g: Graph, module: string, x: Tensor): Tensor {
    const override = this.linearOverrides.get(module);
    return override ? override(g, module, x) : this.baseLinear(g, module, x);
  }

  baseLinear(g: Graph, module: string, x: Tensor): Tensor {
    const y = g.mulMat(this.matmulWeight(g, module), x);
    const bias = `${module}.bias`;
    return this.hasParam(bias) ? g.add(y, this.param(bias)) : y;
  }

  /** The module's weight as mul_mat's first operand: ggml [in, out], i.e. HF nn.Linear [out, in]. */
  matmulWeight(g: Graph, module: string): Tensor {
    void g;
    return this.param(`${module}.weight`);
  }

  /** Converts a weight in matmulWeight's layout to the stored layout (the inverse of matmulWeight). */
  toStoredLayout(g: Graph, module: string, w: Tensor): Tensor {
    void g;
    void module;
    return w;
  }

  /** Modules that go through `linear` (adapter targets): every 2-D weight but the embeddings. */
  get linearModules(): string[] {
    return this.parameterSpecs()
      .filter((s) => s.shape.length === 2 && s.name.endsWith(".weight") && !EMBEDDING.test(s.name))
      .map((s) => s.name.slice(0, -".weight".length));
  }

  /** Input and output features of a linear module. */
  linearFeatures(module: string): { in: number; out: number } {
    const [inp, out] = this.matmulShape(module);
    return { in: inp, out };
  }

  /** ggml ne of matmulWeight(module). */
  protected matmulShape(module: string): [number, number] {
    const [n0, n1] = this.param(`${module}.weight`).ne;
    return [n0, n1];
  }

  /**
   * The Hugging Face loss for this model on a batch: causal LM cross-entropy with labels shifted
   * by one (labels default to input_ids, -100 ignored), or classification cross-entropy; averaged
   * per task as options say (see crossEntropy). Returns the graph inputs the loss needs next to
   * the forward inputs, and the per-task losses [tasks].
   */
  buildLoss(g: Graph, logits: Tensor, batchSize: number, seqLen: number, options: LossOptions = {}): { loss: Tensor; taskLosses: Tensor; targets: [Tensor, (batch: LossBatch) => HostArray][] } {
    const [classes, positions] = logits.ne;
    const tasks = options.tasks ?? 1;
    const inputs: CrossEntropyInputs = {
      indices: g.input("i32", [positions], "target indices"),
      used: g.input("f32", [positions], "target mask"),
      segments: g.input("f32", [positions, tasks], "target task weights"),
      taskWeights: g.input("f32", [tasks], "task shares"),
    };
    const { loss, taskLosses } = crossEntropy(g, logits, inputs, options.focalGamma);
    const causal = this.kind === "causal-lm";
    let last: { batch: LossBatch; targets: ReturnType<typeof crossEntropyTargets> } | undefined;
    const targetsOf = (batch: LossBatch) => {
      if (last?.batch !== batch) {
        last = { batch, targets: crossEntropyTargets(causal ? shiftLabels(batch.labels, batchSize, seqLen) : batch.labels, {
          classes, rowLength: causal ? seqLen : 1, rowTasks: batch.rowTasks, tasks, balance: options.balance,
        }) };
      }
      return last.targets;
    };
    return {
      loss,
      taskLosses,
      targets: (Object.keys(inputs) as (keyof CrossEntropyInputs)[]).map((key) => [inputs[key], (batch: LossBatch) => targetsOf(batch)[key]]),
    };
  }

  /** One forward pass over a batch (and the Hugging Face loss when labels are given). */
  run(batch: Batch, labels?: Int32Array): { logits: Float32Array; logitsShape: number[]; loss?: number } {
    checkBatch(batch, this.config.vocabSize);
    const g = new Graph(this.backend, { maxNodes: this.graphNodes });
    try {
      const { logits, inputs } = this.forward(g, batch.batchSize, batch.seqLen);
      g.output(logits);
      const lossParts = labels ? this.buildLoss(g, logits, batch.batchSize, batch.seqLen) : undefined;
      if (lossParts) g.output(lossParts.loss);
      g.allocate();
      for (const [tensor, fill] of inputs.values) tensor.setAll(fill(batch));
      for (const [tensor, fill] of lossParts?.targets ?? []) tensor.setAll(fill({ labels: labels! }));
      g.compute();
      return { logits: logits.getF32(), logitsShape: logits.torchShape.length === 2 && this.kind === "causal-lm" ? [batch.batchSize, batch.seqLen, logits.ne[0]] : logits.torchShape, loss: lossParts?.loss.getF32()[0] };
    } finally {
      g.free();
    }
  }

  free(): void {
    this.store.free();
  }
}

/** Out-of-range ids would make ggml's get_rows read past the embedding table. */
function checkBatch(batch: Batch, vocabSize: number): void {
  const n = batch.batchSize * batch.seqLen;
  if (!Number.isInteger(batch.batchSize) || !Number.isInteger(batch.seqLen) || n < 1) {
    throw new Error(`a batch needs positive integer batch size and sequence length, got [${batch.batchSize}, ${batch.seqLen}]`);
  }
  for (const [field, values] of [["input_ids", batch.inputIds], ["attention_mask", batch.attentionMask], ["token_type_ids", batch.tokenTypeIds]] as const) {
    if (values && values.length !== n) throw new Error(`${field} has ${values.length} entries, expected ${batch.batchSize} x ${batch.seqLen}`);
  }
  const bad = batch.inputIds.findIndex((id) => id < 0 || id >= vocabSize);
  if (bad >= 0) throw new Error(`input_ids[${bad}] = ${batch.inputIds[bad]} is outside the vocabulary [0, ${vocabSize})`);
}

/** Position t of each sequence predicts token t + 1; the last position predicts nothing. */
export function shiftLabels(labels: Int32Array, batchSize: number, seqLen: number): Int32Array {
  const shifted = new Int32Array(labels.length).fill(IGNORE_INDEX);
  for (let b = 0; b < batchSize; b++) {
    for (let t = 0; t + 1 < seqLen; t++) shifted[b * seqLen + t] = labels[b * seqLen + t + 1];
  }
  return shifted;
}
