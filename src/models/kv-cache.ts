// Keys and values of past tokens, per layer, in persistent tensors: decoding a token then costs
// one token's forward pass instead of the whole sequence's.
import type { Backend } from "../engine/backend.ts";
import type { Graph } from "../engine/graph.ts";
import { TensorStore } from "../engine/store.ts";
import type { Tensor } from "../engine/tensor.ts";

export class KvCache {
  private readonly store: TensorStore;
  private readonly keys: Tensor[] = [];
  private readonly values: Tensor[] = [];

  constructor(backend: Backend, layers: number, readonly headDim: number, readonly kvHeads: number, readonly maxLength: number, readonly batchSize: number) {
    this.store = new TensorStore(backend, "kv cache", 2 * layers + 1);
    for (let i = 0; i < layers; i++) {
      this.keys.push(this.store.tensor("f32", [headDim, kvHeads, maxLength, batchSize], `k ${i}`));
      this.values.push(this.store.tensor("f32", [headDim, kvHeads, maxLength, batchSize], `v ${i}`));
    }
    this.store.allocate();
  }

  /**
   * Writes this pass's k, v [headDim, kvHeads, n, batch] at positions past..past+n-1 of a layer and
   * returns the layer's keys and values for positions 0..past+n-1. The copies are expanded into
   * the graph first, so the reads after them see the new entries.
   */
  append(g: Graph, layer: number, k: Tensor, v: Tensor, past: number): { k: Tensor; v: Tensor } {
    const n = k.ne[2];
    if (past + n > this.maxLength) throw new Error(`KV cache holds ${this.maxLength} positions; ${past + n} needed`);
    const slice = (t: Tensor, from: number, count: number) => g.view(t, [this.headDim, this.kvHeads, count, this.batchSize], [t.nb[1], t.nb[2], t.nb[3]], from * t.nb[2]);
    g.copyInto(k, slice(this.keys[layer], past, n));
    g.copyInto(v, slice(this.values[layer], past, n));
    return { k: slice(this.keys[layer], 0, past + n), v: slice(this.values[layer], 0, past + n) };
  }

  free(): void {
    this.store.free();
  }
}
