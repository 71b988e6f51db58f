// Every task metric on examples worked out by hand (the arithmetic is in the comments).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  argmax, bitsPerByte, compileExtractor, exactMatch, INVALID_ANSWER, lastNumber, lcsLength, meanWithStderr, multipleChoiceScores, normalize,
  perplexity, rougeL, tokenF1,
} from "../src/eval/metrics.ts";

const close = (actual: number, expected: number, tolerance = 1e-12) =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `expected ${expected}, got ${actual}`);

test("normalisers: SQuAD's normalize_answer and the others by name", () => {
  // lowercase -> "the  quick, brown-fox!"; no punctuation -> "the  quick brownfox"; no articles; collapsed spaces
  assert.equal(normalize("The  quick, brown-Fox!", ["squad"]), "quick brownfox");
  assert.equal(normalize("  An apple a day\tkeeps\n", ["squad"]), "apple day keeps");
  assert.equal(normalize("theory", ["squad"]), "theory", "articles are whole words only");
  assert.equal(normalize("  A b  ", ["strip"]), "A b");
  assert.equal(normalize("A  b\tc", ["whitespace"]), "A b c");
  assert.equal(normalize("$1,234.", ["number"]), "1234");
  assert.equal(normalize("  -7. ", ["number"]), "-7");
  assert.equal(normalize("Hello, World", ["lowercase", "punctuation"]), "hello world");
  assert.equal(normalize("x", ["none"]), "x");
});

test("exact match: after the named normaliser, against any reference", () => {
  assert.equal(exactMatch(" 72\n", ["72"]), 1, "default normaliser strips surrounding whitespace");
  assert.equal(exactMatch("72 apples", ["72"]), 0);
  assert.equal(exactMatch("The Cat!", ["cat"], ["squad"]), 1);
  assert.equal(exactMatch("The Cat!", ["cat"], ["lowercase"]), 0);
  assert.equal(exactMatch("Paris", ["London", "paris"], ["lowercase"]), 1);
  assert.equal(exactMatch("Paris", [], ["lowercase"]), 0);
});

test("token F1: SQuAD's overlap with multiplicity, best reference", () => {
  // squad-normalised: pred [cat sat on mat], gold [cat sat on hat]: 3 shared, P = R = 3/4, F1 = 0.75
  close(tokenF1("The cat sat on the mat.", ["a cat sat on a hat"]), 0.75);
  // pred [a a a b], gold [a b b]: shared min(3,1) + min(1,2) = 2, P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7
  close(tokenF1("a a a b", ["a b b"], ["none"]), 4 / 7);
  assert.equal(tokenF1("x y", ["z"], ["none"]), 0);
  assert.equal(tokenF1("", [""]), 1, "two empty answers agree");
  assert.equal(tokenF1("", ["x"]), 0);
  assert.equal(tokenF1("cat", ["dog", "cat"]), 1, "the best reference counts");
});

test("ROUGE-L: LCS F-measure over whitespace tokens", () => {
  // Lin (2004): S2 "police kill the gunman" vs S1 "police killed the gunman": LCS = police the gunman = 3, P = R = 3/4
  close(rougeL("police killed the gunman", ["police kill the gunman"]), 0.75);
  // S3 "the gunman police killed": LCS = the gunman = 2, P = R = 1/2
  close(rougeL("the gunman police killed", ["police kill the gunman"]), 0.5);
  // pred [a b] vs gold [a b c d]: LCS 2, P = 1, R = 1/2, F = 2/3
  close(rougeL("A B", ["a b c d"]), 2 / 3, 1e-12);
  assert.equal(rougeL("A B", ["a b c d"], ["none"]), 0, "case matters without a normaliser");
  assert.equal(rougeL("", ["a"]), 0);
  // CLRS's example: LCS of ABCBDAB and BDCABA has length 4 (BCBA)
  assert.equal(lcsLength([..."ABCBDAB"], [..."BDCABA"]), 4);
  assert.equal(lcsLength([], ["a"]), 0);
});

test("answer extraction: GSM8K's #### pattern, the last-number fallback, custom regexes", () => {
  const gsm8k = compileExtractor("gsm8k");
  assert.equal(gsm8k("She has 5 + 3 = 8 apples.\n#### 8"), "8");
  assert.equal(gsm8k("#### -1,234.5 dollars"), "-1,234.5");
  assert.equal(gsm8k("#### 12\n#### 13"), "12", "first match by default");
  assert.equal(gsm8k("So the answer is 42."), "42", "no ####: the last number");
  assert.equal(gsm8k("no idea"), INVALID_ANSWER);
  assert.equal(normalize(gsm8k("Total: $1,200.\n#### 1,200."), ["number"]), "1200");

  assert.equal(lastNumber("from 3 to -7 degrees"), "-7");
  assert.equal(lastNumber("costs $1,200.50 in 2 ways, "), "2");
  assert.equal(lastNumber("1, 2, 3,"), "3");
  assert.equal(lastNumber("it ends in 5."), "5");
  assert.equal(lastNumber("none"), undefined);

  const last = compileExtractor({ regex: "answer is (\\w+)", match: "last" });
  assert.equal(last("the answer is no; no, the answer is yes"), "yes");
  assert.equal(compileExtractor({ regex: "[0-9]+" })("abc 17 and 4"), "17", "no group: the whole match");
  assert.equal(compileExtractor({ regex: "x=(\\d)" })("nothing"), INVALID_ANSWER, "no fallback");
  assert.throws(() => compileExtractor({ regex: "(" }), /invalid regex "\("/);
  assert.throws(() => compileExtractor({ regex: "(a)", group: 2 }), /1 capture group\(s\), so group 2/);
  assert.throws(() => compileExtractor("gsm9k"), /unknown extraction preset "gsm9k"/);
});

test("multiple choice: acc picks the likeliest choice, acc_norm the likeliest per byte", () => {
  // lls -2 and -3 over 2 and 6 bytes: acc picks 0; per byte -1 and -0.5, acc_norm picks 1
  assert.deepEqual(multipleChoiceScores([-2, -3], ["ab", "abcdef"], 1), { acc: 0, acc_norm: 1, prediction: 0, predictionNorm: 1 });
  assert.deepEqual(multipleChoiceScores([-2, -3], ["ab", "abcdef"], 0), { acc: 1, acc_norm: 0, prediction: 0, predictionNorm: 1 });
  // bytes, not characters: "é" is 2 bytes, so -1/2 = -0.5 beats -1.5/2 = -0.75 (by characters it would be -1 vs -0.75)
  assert.equal(multipleChoiceScores([-1, -1.5], ["é", "ab"], 0).predictionNorm, 0);
  assert.equal(argmax([1, 3, 3, 2]), 1, "ties go to the first, as numpy's argmax");
  assert.throws(() => multipleChoiceScores([-1], ["a", "b"], 0), /1 log-likelihoods for 2 choices/);
});

test("aggregation: mean with its standard error, perplexity, bits per byte", () => {
  // mean 0.75; sample variance ((0.25² · 3) + 0.75²) / 3 = 0.25; stderr √(0.25 / 4) = 0.25
  assert.deepEqual(meanWithStderr([1, 0, 1, 1]), { value: 0.75, stderr: 0.25, n: 4 });
  assert.deepEqual(meanWithStderr([0.5]), { value: 0.5, stderr: null, n: 1 });
  assert.ok(Number.isNaN(meanWithStderr([]).value));
  // −(−2 − 4) / (1 + 2) tokens = 2 nats per token
  close(perplexity([-2, -4], [1, 2]), Math.exp(2));
  // 8 bits of log-likelihood over 4 bytes
  close(bitsPerByte([-8 * Math.LN2], [4]), 2);
});
