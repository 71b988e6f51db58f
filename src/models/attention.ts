// Multi-head attention as explicit matmuls and softmax (ggml's flash attention has no backward),
// shared by every architecture.
import type { Graph } from "../engine/graph.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { Batch, ForwardInputs } from "./model.ts";

/** transformers fills masked scores with the dtype's minimum rather than -inf, so that a fully
 * masked row (a padding query) softmaxes to uniform weights instead of NaN. */
const MASKED = -3.4028234663852886e38;

/**
 * Additive attention mask [keys, queries, 1, batch], causal and/or padding. With a KV cache the
 * queries are the last seqLen of past + seqLen keys, and batch.attentionMask covers all keys.
 */
export function attentionMaskInput(g: Graph, batchSize: number, seqLen: number, causal: boolean, past = 0): ForwardInputs["values"][number] {
  const keys = past + seqLen;
  const mask = g.input("f32", [keys, seqLen, 1, batchSize], "attention mask");
  return [mask, (batch: Batch) => {
    const out = new Float32Array(keys * seqLen * batchSize);
    for (let b = 0; b < batchSize; b++) {
      for (let q = 0; q < seqLen; q++) {
        for (let k = 0; k < keys; k++) {
          const padded = batch.attentionMask !== undefined && batch.attentionMask[b * keys + k] === 0;
          if (padded || (causal && k > past + q)) out[(b * seqLen + q) * keys + k] = MASKED;
        }
      }
    }
    return out;
  }];
}

/** Position of every token, [seqLen * batch]: batch.positions, or 0..seqLen-1 in each row. */
export function positionsInput(g: Graph, batchSize: number, seqLen: number): ForwardInputs["values"][number] {
  return [g.input("i32", [seqLen * batchSize], "positions"),
    (batch: Batch) => batch.positions ?? Int32Array.from({ length: seqLen * batchSize }, (_, i) => i % seqLen)];
}

/**
 * softmax(q k^T * scale + mask) v for q [headDim, heads, seqQ, batch] and k, v [headDim, kvHeads,
 * seqK, batch] (seqK > seqQ with a KV cache). Grouped-query attention needs no repeated k/v: mul_mat broadcasts its first operand
 * over dim 2, query head h reading kv head h / (heads / kvHeads) as transformers' repeat_kv does.
 * ggml's mul_mat backward only handles that broadcast when dim 3 is 1, so batch is folded into
 * dim 2 (index head + heads * batch, which keeps the mapping exact). Returns [headDim * heads, seq * batch].
 */
export function attend(g: Graph, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number): Tensor {
  const [headDim, heads, seq, batch] = q.ne;
  const [, kvHeads, keys] = k.ne;
  if (heads % kvHeads !== 0) throw new Error(`attention: ${heads} query heads are not a multiple of ${kvHeads} kv heads`);
  const fold = (t: Tensor, n: number, axes: [number, number, number, number], ne: number[]) =>
    g.reshape(g.cont(g.permute(t, axes)), [ne[0], ne[1], n * batch]);
  const qh = fold(q, heads, [0, 2, 1, 3], [headDim, seq]); // [headDim, seq, heads * batch]
  const kh = fold(k, kvHeads, [0, 2, 1, 3], [headDim, keys]); // [headDim, seqK, kvHeads * batch]
  const scores = g.reshape(g.mulMat(kh, qh), [keys, seq, heads, batch]); // [seqK, seqQ, heads, batch]
  const probs = g.reshape(g.softMax(scores, mask, scale), [keys, seq, heads * batch]);
  const vt = fold(v, kvHeads, [1, 2, 0, 3], [keys, headDim]); // [seqK, headDim, kvHeads * batch]
  const out = g.reshape(g.mulMat(vt, probs), [headDim, seq, heads, batch]);
  return g.reshape(g.cont(g.permute(out, [0, 2, 1, 3])), [headDim * heads, seq * batch]);
}
