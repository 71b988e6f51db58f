// Seeded few-shot sampling: the demonstrations of item i depend only on the seed, i and the pool,
// never on the model, the other items or --limit, so base and tuned models (or reruns) see the
// very same prompts.
import { seededUniform } from "../engine/random.ts";

/** A 32-bit mix of a seed and an item index (murmur3's finalizer over both words). */
export function itemSeed(seed: number, index: number): number {
  let h = Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index >>> 0, 0x85ebca6b);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class FewShotSampler<T> {
  /**
   * @param pool the examples to draw from (a training split, or the evaluated rows themselves)
   * @param seed fixes every draw
   * @param key identifies an example: a pool entry with the same key as the item is never drawn for it
   */
  constructor(readonly pool: readonly T[], readonly seed: number, private readonly key: (example: T) => string) {}

  /**
   * `k` distinct examples for item number `index`, uniformly without replacement, in draw order,
   * excluding any pool entry equal (by key) to `item`. Fewer than k eligible examples is an error.
   */
  sample(k: number, index: number, item?: T): T[] {
    if (k === 0) return [];
    const exclude = item === undefined ? undefined : this.key(item);
    const random = seededUniform(itemSeed(this.seed, index));
    const n = this.pool.length;
    // A partial Fisher-Yates shuffle over a virtual 0..n-1 array: O(k) time and memory per item.
    const swapped = new Map<number, number>();
    const at = (i: number) => swapped.get(i) ?? i;
    const chosen: T[] = [];
    for (let i = 0; i < n && chosen.length < k; i++) {
      const j = i + Math.floor(random() * (n - i));
      const picked = at(j);
      swapped.set(j, at(i));
      const example = this.pool[picked];
      if (exclude !== undefined && this.key(example) === exclude) continue;
      chosen.push(example);
    }
    if (chosen.length < k) throw new Error(`few-shot: ${k} examples asked for, but the pool has only ${chosen.length} besides the item itself`);
    return chosen;
  }
}
