// Copy, reverse or sort a short list of digits or letters: the answer is the whole output list,
// generated and scored by exact match.
import { z } from "zod";
import { checkLengths, keysOf, lengthOptions, randomInt, randomList, type SyntheticTask } from "./common.ts";

const ALPHABETS = {
  digits: { label: "Digits", items: "0123456789" },
  letters: { label: "Letters", items: "abcdefghijklmnopqrstuvwxyz" },
};

const OPERATIONS = {
  copy: { label: "Copy", apply: (items: string[]) => items },
  reverse: { label: "Reverse", apply: (items: string[]) => [...items].reverse() },
  // Single characters: code-point order is numeric order for digits and alphabetical for letters.
  sort: { label: "Sort", apply: (items: string[]) => [...items].sort() },
};

const sequenceOptions = checkLengths(z.strictObject({
  op: z.enum(keysOf(OPERATIONS)).default("reverse").describe("what to do with the list"),
  alphabet: z.enum(keysOf(ALPHABETS)).default("digits").describe("what the list holds"),
  ...lengthOptions(3, 8),
}));

export const sequence: SyntheticTask<z.infer<typeof sequenceOptions>> = {
  description: "copy, reverse or sort a short list of digits or letters (generated, exact match)",
  options: sequenceOptions,
  rows: (o, random) => () => {
    const { label, items } = ALPHABETS[o.alphabet];
    const list = randomList(random, o.min_length, o.max_length, () => items[randomInt(random, 0, items.length - 1)]);
    const op = OPERATIONS[o.op];
    return { prompt: `${label}: ${list.join(" ")}\n${op.label}:`, completion: ` ${op.apply(list).join(" ")}` };
  },
};
