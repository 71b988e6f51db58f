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
 * seq, batch]. Grouped-query attention needs no repeated k/v: mul_mat broadcasts its first operand
 * over dim 2, query head h reading kv head h / (heads / kvHeads) as transformers' repeat_kv does.
 * ggml's mul_mat backward only handles that broadcast when dim 3 is 1, so batch is folded into
 * dim 2 (index head + heads * batch, which keeps the mapping exact). Returns [headDim * heads, seq * batch].
 */
export function attend(g: Graph, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number): Tensor {
  const [headDim, heads, seq, batch] = q.ne;
  const kvHeads = k.ne[1];
  if (heads % kvHeads !== 0) throw new Error(`attention: ${heads} query heads are not a multiple of ${kvHeads} kv heads`);
  const fold = (t: Tensor, n: number, axes: [number, number, number, number], ne: number[]) =>
    g.reshape(g.cont(g.permute(t, axes)), [ne[0], ne[1], n * batch]);
  const qh = fold(q, heads, [0, 2, 1, 3], [headDim, seq]); // [headDim, seq, heads * batch]
  const kh = fold(k, kvHeads, [0, 2, 1, 3], [headDim, seq]); // [headDim, seq, kvHeads * batch]
  const scores = g.reshape(g.mulMat(kh, qh), [seq, seq, heads, batch]); // [seqK, seqQ, heads, batch]
  const probs = g.reshape(g.softMax(scores, mask, scale), [seq, seq, heads * batch]);
  const vt = fold(v, kvHeads, [1, 2, 0, 3], [seq, headDim]); // [seq, headDim, kvHeads * batch]
  const out = g.reshape(g.mulMat(vt, probs), [headDim, seq, heads, batch]);
  return g.reshape(g.cont(g.permute(out, [0, 2, 1, 3])), [headDim * heads, seq * batch]);
}
