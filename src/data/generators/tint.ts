// TInt, traced integers ("Understanding the Effect of Noise in LLM Training Data with Algorithmic
// Chains of Thought"): a function folded over a list of integers, written step by step (the trace,
// a chain of thought with exact intermediate values), then the answer:
//   prompt "Sum mod 10: 3 5 2 7\nTrace:"   completion " 3 8 0 7\nAnswer: 7"
// Noise corrupts trace steps of a fraction of the rows (`rate`, the paper's contamination), each
// step with probability `intensity`. Static noise rewrites steps of the finished trace, so the
// errors stay local and the answer is right; dynamic noise corrupts a step while computing, so the
// error carries into every later step and the answer.
import { z } from "zod";
import { checkLengths, keysOf, lengthOptions, randomInt, randomList, type SyntheticTask } from "./common.ts";

interface TracedFunction {
  /** What the prompt calls it. */
  label(o: TintOptions, target: number): string;
  /** The value before the first item. */
  initial: number;
  step(o: TintOptions, previous: number, item: number, target: number): number;
  /** The values step `i` (0-based) can take, lo..hi: a corrupted step takes another one of them. */
  range(o: TintOptions, i: number): [number, number];
}

const FUNCTIONS: Record<"sum" | "product" | "max" | "min" | "count", TracedFunction> = {
  sum: { label: (o) => `Sum mod ${o.modulus}`, initial: 0, step: (o, p, x) => (p + x) % o.modulus, range: (o) => [0, o.modulus - 1] },
  product: { label: (o) => `Product mod ${o.modulus}`, initial: 1, step: (o, p, x) => (p * x) % o.modulus, range: (o) => [0, o.modulus - 1] },
  max: { label: () => "Max", initial: -Infinity, step: (_, p, x) => Math.max(p, x), range: (o) => [o.min_value, o.max_value] },
  min: { label: () => "Min", initial: Infinity, step: (_, p, x) => Math.min(p, x), range: (o) => [o.min_value, o.max_value] },
  // How many of the items so far equal the target (one of the list's items).
  count: { label: (_, t) => `Count ${t}`, initial: 0, step: (_, p, x, t) => p + (x === t ? 1 : 0), range: (_, i) => [0, i + 1] },
};

const noiseOptions = z.strictObject({
  kind: z.enum(["none", "static", "dynamic"]).default("none").describe("static: steps rewritten after computing (answer right); dynamic: while computing (errors propagate)"),
  rate: z.number().min(0).max(1).default(0.5).describe("fraction of rows contaminated"),
  intensity: z.number().min(0).max(1).default(0.2).describe("probability that a step of a contaminated row is corrupted"),
});

const tintOptions = checkLengths(z.strictObject({
  fn: z.enum(keysOf(FUNCTIONS)).default("sum").describe("running sum or product (mod modulus), running max or min, or running count of one of the items"),
  modulus: z.number().int().min(2).max(1000).default(10).describe("sum and product are taken mod this"),
  ...lengthOptions(4, 8),
  min_value: z.number().int().min(0).max(999).default(0).describe("smallest item"),
  max_value: z.number().int().min(0).max(999).default(9).describe("largest item"),
  noise: noiseOptions.default(() => noiseOptions.parse({})),
})).refine((o) => o.max_value > o.min_value, { path: ["max_value"], message: "must be above min_value" });

type TintOptions = z.infer<typeof tintOptions>;

export const tint: SyntheticTask<TintOptions> = {
  description: "traced integers (TInt): a running sum, product, max or count over a list, step by step, then the answer; static or dynamic noise",
  options: tintOptions,
  rows: (o, random) => () => {
    const f = FUNCTIONS[o.fn];
    const items = randomList(random, o.min_length, o.max_length, () => randomInt(random, o.min_value, o.max_value));
    // The item count looks for: one of the list's, so that counts are rarely all zero. It is drawn for
    // every function, and every noise draw below is made whatever the noise options: so one seed gives
    // the same lists for every function, clean and noised alike, and a higher rate or intensity
    // corrupts a superset of the steps a lower one does.
    const target = items[randomInt(random, 0, items.length - 1)];
    const contaminated = random() < o.noise.rate && o.noise.kind !== "none";
    const draws = items.map(() => ({ hit: random(), pick: random() }));
    const corrupted = contaminated ? draws.flatMap((d, i) => (d.hit < o.noise.intensity ? [i] : [])) : [];
    // A value of step i's range other than `right`, uniformly.
    const corrupt = (i: number, right: number) => {
      if (!corrupted.includes(i)) return right;
      const [lo, hi] = f.range(o, i);
      const wrong = lo + Math.floor(draws[i].pick * (hi - lo));
      return wrong >= right ? wrong + 1 : wrong;
    };
    const fold = (change: (i: number, value: number) => number) => {
      let value = f.initial;
      return items.map((x, i) => (value = change(i, f.step(o, value, x, target))));
    };
    const clean = fold((_, value) => value);
    const answer = clean[clean.length - 1];
    const trace = o.noise.kind === "dynamic" ? fold(corrupt) : clean.map((value, i) => corrupt(i, value));
    const shownAnswer = o.noise.kind === "dynamic" ? trace[trace.length - 1] : answer;
    return {
      prompt: `${f.label(o, target)}: ${items.join(" ")}\nTrace:`,
      completion: ` ${trace.join(" ")}\nAnswer: ${shownAnswer}`,
      // The right answer to the prompt, whatever the completion shows.
      answer,
      // A contaminated row at a low intensity can come out with no step corrupted.
      ...(o.noise.kind === "none" ? {} : { noised: contaminated, corrupted }),
    };
  },
};
