// Multi-head attention as explicit matmuls and softmax (ggml's flash attention has no backward),
// shared by every architecture.
import type { Graph } from "../engine/graph.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { Batch, ForwardInputs } from "./model.ts";

/** transformers fills masked scores with the dtype's minimum rather than -inf, so that a fully
 * masked row (a padding query) softmaxes to uniform weights instead of NaN. */
const MASKED = -3.4028234663852886e38;

/** Additive attention mask [keys, queries, 1, batch]: causal and/or padding. */
export function attentionMaskInput(g: Graph, batchSize: number, seqLen: number, causal: boolean): ForwardInputs["values"][number] {
  const mask = g.input("f32", [seqLen, seqLen, 1, batchSize], "attention mask");
  return [mask, (batch: Batch) => {
    const out = new Float32Array(seqLen * seqLen * batchSize);
    for (let b = 0; b < batchSize; b++) {
      for (let q = 0; q < seqLen; q++) {
        for (let k = 0; k < seqLen; k++) {
          const padded = batch.attentionMask !== undefined && batch.attentionMask[b * seqLen + k] === 0;
          if (padded || (causal && k > q)) out[(b * seqLen + q) * seqLen + k] = MASKED;
        }
      }
    }
    return out;
  }];
}

/** Token positions 0..seqLen-1, shared by every sequence of the batch. */
export function positionsInput(g: Graph, seqLen: number): ForwardInputs["values"][number] {
  return [g.input("i32", [seqLen], "positions"), () => Int32Array.from({ length: seqLen }, (_, i) => i)];
}

/**
 * softmax(q k^T * scale + mask) v for q [headDim, heads, seq, batch] and k, v [headDim, kvHeads,
 * seq, batch]. Grouped-query attention needs no copies: mul_mat broadcasts k and v over query
 * heads with head h reading kv head h / (heads / kvHeads), which is transformers' repeat_kv.
 * Returns [headDim * heads, seq * batch].
 */
export function attend(g: Graph, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number): Tensor {
  const [headDim, heads, seq, batch] = q.ne;
  if (heads % k.ne[1] !== 0) throw new Error(`attention: ${heads} query heads are not a multiple of ${k.ne[1]} kv heads`);
  const qh = g.permute(q, [0, 2, 1, 3]); // [headDim, seq, heads, batch]
  const kh = g.permute(k, [0, 2, 1, 3]); // [headDim, seq, kvHeads, batch]
  const scores = g.mulMat(kh, qh); // [seqK, seqQ, heads, batch]
  const probs = g.softMax(scores, mask, scale);
  const vt = g.cont(g.permute(v, [1, 2, 0, 3])); // [seq, headDim, kvHeads, batch]
  const out = g.mulMat(vt, probs); // [headDim, seqQ, heads, batch]
  return g.reshape(g.cont(g.permute(out, [0, 2, 1, 3])), [headDim * heads, seq * batch]);
}
