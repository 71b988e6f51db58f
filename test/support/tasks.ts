// Small seeded training data shared by the trainer tests.
import { seededUniform } from "../../src/engine/random.ts";
import type { BatchSource } from "../../src/train/trainer.ts";

/** Copy task: the second half of each row repeats the first; batch i is fixed by its index. */
export function copyTask(batchSize: number, seqLen: number): BatchSource {
  return {
    batchAt(i) {
      const r = seededUniform(1000 + i);
      const ids = new Int32Array(batchSize * seqLen);
      for (let b = 0; b < batchSize; b++) {
        for (let t = 0; t < seqLen / 2; t++) ids[b * seqLen + t] = ids[b * seqLen + seqLen / 2 + t] = 10 + Math.floor(r() * 50);
      }
      return { batch: { batchSize, seqLen, inputIds: ids }, labels: ids, tokens: batchSize * seqLen };
    },
  };
}
