// Log-likelihood of continuations given contexts (multiple-choice tasks), batched through one
// fixed-shape forward graph; per-token log-probabilities are computed in the graph.
import { tokenLogProbs } from "../engine/compose.ts";
import { Graph } from "../engine/graph.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { Batch, ForwardInputs, Model } from "../models/model.ts";

export interface ScoringRequest {
  context: number[];
  continuation: number[];
}

export class LogLikelihoodScorer {
  private readonly graph: Graph;
  private readonly logProbs: Tensor;
  private readonly indices: Tensor;
  private readonly used: Tensor;
  private readonly inputs: ForwardInputs["values"];

  constructor(readonly model: Model, readonly batchSize: number, readonly seqLen: number) {
    if (model.kind !== "causal-lm") throw new Error(`log-likelihood scoring needs a causal LM, not ${model.config.modelType} ${model.kind}`);
    this.graph = new Graph(model.backend, { maxNodes: model.graphNodes });
    const { logits, inputs } = model.forward(this.graph, batchSize, seqLen);
    this.inputs = inputs.values;
    this.indices = this.graph.input("i32", [batchSize * seqLen], "target indices");
    this.used = this.graph.input("f32", [batchSize * seqLen], "target mask");
    this.logProbs = this.graph.output(tokenLogProbs(this.graph, logits, this.indices, this.used));
    this.graph.allocate();
  }

  /** Sum of log p(continuation tokens | context) for each request; contexts are cut from the left to fit. */
  score(requests: readonly ScoringRequest[]): number[] {
    const scores: number[] = [];
    for (let start = 0; start < requests.length; start += this.batchSize) {
      scores.push(...this.scoreBatch(requests.slice(start, start + this.batchSize)));
    }
    return scores;
  }

  private scoreBatch(requests: readonly ScoringRequest[]): number[] {
    const { batchSize: B, seqLen: S } = this;
    const vocab = this.model.config.vocabSize;
    const ids = new Int32Array(B * S);
    const mask = new Int32Array(B * S);
    const indices = new Int32Array(B * S);
    const used = new Float32Array(B * S);
    requests.forEach((r, b) => {
      if (r.continuation.length === 0 || r.continuation.length >= S) throw new Error(`a continuation must have 1 to ${S - 1} tokens, got ${r.continuation.length}`);
      const seq = [...r.context, ...r.continuation].slice(-S);
      const firstTarget = seq.length - r.continuation.length;
      seq.forEach((id, t) => {
        ids[b * S + t] = id;
        mask[b * S + t] = 1;
      });
      for (let t = firstTarget; t < seq.length; t++) {
        const position = b * S + t - 1;
        indices[position] = position * vocab + seq[t];
        used[position] = 1;
      }
    });
    const batch: Batch = { batchSize: B, seqLen: S, inputIds: ids, attentionMask: mask };
    for (const [t, fill] of this.inputs) t.setAll(fill(batch));
    this.indices.setAll(indices);
    this.used.setAll(used);
    this.graph.compute();
    const logProbs = this.logProbs.getF32();
    return requests.map((_, b) => logProbs.subarray(b * S, (b + 1) * S).reduce((a, v) => a + v, 0));
  }

  free(): void {
    this.graph.free();
  }
}

export interface MultipleChoiceItem {
  context: number[];
  choices: number[][];
  answer: number;
}

/** Accuracy of picking the most likely choice (lm-evaluation-harness's `acc`). */
export function multipleChoiceAccuracy(scorer: LogLikelihoodScorer, items: readonly MultipleChoiceItem[]): { accuracy: number; predictions: number[] } {
  const requests = items.flatMap((item) => item.choices.map((continuation) => ({ context: item.context, continuation })));
  const scores = scorer.score(requests);
  let offset = 0;
  const predictions = items.map((item) => {
    const s = scores.slice(offset, offset + item.choices.length);
    offset += item.choices.length;
    return s.indexOf(Math.max(...s));
  });
  const correct = predictions.filter((p, i) => p === items[i].answer).length;
  return { accuracy: correct / items.length, predictions };
}
