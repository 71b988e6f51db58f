// Key-value recall: "knowledge" a fine-tune may forget. A knowledge base of made-up words, each
// with a digit, is built from its own `kb_seed`, so that rows drawn with different row seeds
// (train, test) share the same facts. Rows are the facts themselves as text, for training them
// in, or cloze questions over them, scored as multiple choice over the ten digits:
//   fact {"text": "The code of mafe is 7."}   question {"prompt": "The code of mafe is", "completion": " 7"}
import { z } from "zod";
import { seededUniform } from "../../engine/random.ts";
import { shuffledIndices } from "../shuffle.ts";
import { DIGIT_CHOICES, randomInt, type SyntheticRow, type SyntheticTask } from "./common.ts";

const CONSONANTS = "bdfgklmnprstvz";
const VOWELS = "aeiou";
/** Two consonant-vowel syllables: 70² = 4,900 words, so 1,000 distinct keys are quick to draw. */
const MAX_FACTS = 1000;

const kvOptions = z.strictObject({
  facts: z.number().int().min(1).max(MAX_FACTS).default(100).describe("size of the knowledge base"),
  kb_seed: z.number().int().default(1).describe("seed of the knowledge base (the row seed only picks and orders rows)"),
  format: z.enum(["question", "fact"]).default("question").describe("question: prompt/completion cloze; fact: the statement as text"),
});

type KvOptions = z.infer<typeof kvOptions>;

interface Fact {
  key: string;
  value: number;
}

export const kvRecall: SyntheticTask<KvOptions> = {
  description: "recall the digit a made-up word stands for, from a fixed knowledge base (kb_seed)",
  options: kvOptions,
  choices: DIGIT_CHOICES,
  rows(o, random) {
    const facts = knowledgeBase(o.facts, o.kb_seed);
    // Rows go through the facts in epochs, each a new shuffle: N rows hold every fact once.
    let order: Uint32Array = new Uint32Array(0);
    let next = 0;
    return (): SyntheticRow => {
      if (next === order.length) {
        order = shuffledIndices(facts.length, Math.floor(random() * 2 ** 32));
        next = 0;
      }
      const { key, value } = facts[order[next++]];
      return o.format === "fact" ? { text: `The code of ${key} is ${value}.` } : { prompt: `The code of ${key} is`, completion: ` ${value}` };
    };
  },
};

function knowledgeBase(size: number, seed: number): Fact[] {
  const random = seededUniform(seed);
  const syllable = () => CONSONANTS[randomInt(random, 0, CONSONANTS.length - 1)] + VOWELS[randomInt(random, 0, VOWELS.length - 1)];
  const keys = new Set<string>();
  while (keys.size < size) keys.add(syllable() + syllable());
  return [...keys].map((key) => ({ key, value: randomInt(random, 0, 9) }));
}
