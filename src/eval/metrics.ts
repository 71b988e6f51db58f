// Task metrics, each a pure function checked by hand in test/eval-metrics.test.ts: multiple-choice
// accuracy (raw and length-normalised, as lm-evaluation-harness), exact match after a named
// normaliser, SQuAD token F1, ROUGE-L, answer extraction by regex (GSM8K's `#### <number>` with a
// last-number fallback), and the mean with its standard error that every per-item metric reports.

// ---------------------------------------------------------------------------------------------
// Normalisers

/**
 * Text normalisers by name. `squad` is SQuAD's normalize_answer: lowercase, drop punctuation, drop
 * the articles a/an/the, collapse whitespace. `number` drops what GSM8K answers carry around a
 * number (thousands commas, "$", a trailing full stop, surrounding space), as lm-evaluation-harness's
 * gsm8k regexes_to_ignore do.
 */
export const NORMALIZER_NAMES = ["none", "strip", "lowercase", "whitespace", "punctuation", "articles", "squad", "number"] as const;
export type NormalizerName = (typeof NORMALIZER_NAMES)[number];

const collapseWhitespace = (s: string) => s.split(/\s+/).filter(Boolean).join(" ");
const removeArticles = (s: string) => s.replace(/\b(a|an|the)\b/g, " ");

export const NORMALIZERS: Record<NormalizerName, (s: string) => string> = {
  none: (s) => s,
  strip: (s) => s.trim(),
  lowercase: (s) => s.toLowerCase(),
  whitespace: collapseWhitespace,
  punctuation: (s) => removePunctuation(s),
  articles: removeArticles,
  squad: (s) => collapseWhitespace(removeArticles(removePunctuation(s.toLowerCase()))),
  number: (s) => s.replace(/[,$]/g, "").trim().replace(/\.$/, "").trim(),
};

/** Python's string.punctuation, which SQuAD's evaluation script removes, plus Unicode punctuation. */
function removePunctuation(s: string): string {
  return s.replace(/[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]|\p{P}/gu, "");
}

/** Applies normalisers left to right. */
export function normalize(text: string, names: readonly NormalizerName[]): string {
  return names.reduce((s, name) => NORMALIZERS[name](s), text);
}

// ---------------------------------------------------------------------------------------------
// Answer extraction

export interface ExtractionSpec {
  /** A JavaScript regular expression; the answer is capture group `group` of its first or last match. */
  regex?: string;
  /** Default 1 when the regex has a capture group, else 0 (the whole match). */
  group?: number;
  /** Which match to take when there are several. Default "first". */
  match?: "first" | "last";
  /** What to use when the regex does not match: the last number in the text, or nothing. */
  fallback?: "last_number" | "none";
}

/** lm-evaluation-harness's GSM8K "strict-match" pattern. */
export const GSM8K_ANSWER = "#### (-?[0-9.,]+)";
/** A number: optional sign and "$", digits with thousands commas, an optional decimal part. */
const NUMBER = /-?\$?\d[\d,]*(?:\.\d+)?/g;

export const EXTRACTION_PRESETS: Record<string, ExtractionSpec> = {
  /** GSM8K: the number after "####", else the last number in the text. */
  gsm8k: { regex: GSM8K_ANSWER, fallback: "last_number" },
  last_number: { fallback: "last_number" },
};

/** What a failed extraction yields (lm-evaluation-harness's filters use the same marker). */
export const INVALID_ANSWER = "[invalid]";

/** The last number written in `text`, without a trailing thousands comma ("1, 2" gives "2"). */
export function lastNumber(text: string): string | undefined {
  const matches = text.match(NUMBER);
  return matches?.at(-1)?.replace(/,+$/, "");
}

/** A compiled extraction: returns the extracted answer, or INVALID_ANSWER. */
export type Extractor = (text: string) => string;

/** Compiles an extraction spec (or preset name); an invalid regex throws with the pattern. */
export function compileExtractor(spec: ExtractionSpec | string): Extractor {
  const resolved = typeof spec === "string" ? EXTRACTION_PRESETS[spec] : spec;
  if (!resolved) throw new Error(`unknown extraction preset "${spec}" (known: ${Object.keys(EXTRACTION_PRESETS).join(", ")})`);
  let pattern: RegExp | undefined;
  if (resolved.regex !== undefined) {
    try {
      pattern = new RegExp(resolved.regex, "g");
    } catch (error) {
      throw new Error(`invalid regex ${JSON.stringify(resolved.regex)}: ${(error as Error).message}`);
    }
  }
  const groups = pattern ? new RegExp(`${pattern.source}|`).exec("")!.length - 1 : 0;
  const group = resolved.group ?? (groups > 0 ? 1 : 0);
  if (group > groups) throw new Error(`regex ${JSON.stringify(resolved.regex)} has ${groups} capture group(s), so group ${group} does not exist`);
  return (text: string) => {
    if (pattern) {
      const matches = [...text.matchAll(pattern)];
      const chosen = resolved.match === "last" ? matches.at(-1) : matches[0];
      const value = chosen?.[group];
      if (value !== undefined) return value.trim();
    }
    if (resolved.fallback === "last_number") return lastNumber(text) ?? INVALID_ANSWER;
    return INVALID_ANSWER;
  };
}

// ---------------------------------------------------------------------------------------------
// Per-item scores

/** 1 when the normalised prediction equals any normalised reference, else 0. */
export function exactMatch(prediction: string, references: readonly string[], normalizers: readonly NormalizerName[] = ["strip"]): number {
  const p = normalize(prediction, normalizers);
  return references.some((r) => normalize(r, normalizers) === p) ? 1 : 0;
}

/**
 * SQuAD's token F1: whitespace tokens of the normalised texts, overlap counted with multiplicity.
 * Two empty texts agree (1); one empty text scores 0. The best reference counts.
 */
export function tokenF1(prediction: string, references: readonly string[], normalizers: readonly NormalizerName[] = ["squad"]): number {
  const pred = tokens(normalize(prediction, normalizers));
  return Math.max(0, ...references.map((reference) => {
    const gold = tokens(normalize(reference, normalizers));
    if (pred.length === 0 || gold.length === 0) return pred.length === gold.length ? 1 : 0;
    const counts = new Map<string, number>();
    for (const t of gold) counts.set(t, (counts.get(t) ?? 0) + 1);
    let same = 0;
    for (const t of pred) {
      const left = counts.get(t) ?? 0;
      if (left > 0) {
        same++;
        counts.set(t, left - 1);
      }
    }
    if (same === 0) return 0;
    const precision = same / pred.length;
    const recall = same / gold.length;
    return (2 * precision * recall) / (precision + recall);
  }));
}

/** Length of the longest common subsequence of two token lists (dynamic programming, O(n·m)). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  let previous = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    const current = new Array<number>(b.length + 1).fill(0);
    for (let j = 1; j <= b.length; j++) {
      current[j] = a[i - 1] === b[j - 1] ? previous[j - 1] + 1 : Math.max(previous[j], current[j - 1]);
    }
    previous = current;
  }
  return previous[b.length];
}

/**
 * ROUGE-L F-measure (β = 1) over whitespace tokens of the normalised texts: with L the LCS length,
 * precision L/|prediction|, recall L/|reference|, F = 2PR/(P+R). The best reference counts.
 */
export function rougeL(prediction: string, references: readonly string[], normalizers: readonly NormalizerName[] = ["lowercase"]): number {
  const pred = tokens(normalize(prediction, normalizers));
  return Math.max(0, ...references.map((reference) => {
    const gold = tokens(normalize(reference, normalizers));
    if (pred.length === 0 || gold.length === 0) return 0;
    const lcs = lcsLength(pred, gold);
    if (lcs === 0) return 0;
    const precision = lcs / pred.length;
    const recall = lcs / gold.length;
    return (2 * precision * recall) / (precision + recall);
  }));
}

function tokens(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

/** Index of the largest value; ties go to the first (numpy's argmax). */
export function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** UTF-8 length of a string, the unit acc_norm divides log-likelihoods by. */
export function byteLength(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/**
 * One multiple-choice item scored from the log-likelihood of each choice: `acc` picks the most
 * likely choice, `acc_norm` the most likely per byte of choice text (log-likelihood divided by the
 * UTF-8 length of the choice string, as lm-evaluation-harness normalises; for ASCII choices this
 * is its `len(choice)`). Choices of zero length cannot be normalised.
 */
export function multipleChoiceScores(logLikelihoods: readonly number[], choices: readonly string[], gold: number): { acc: number; acc_norm: number; prediction: number; predictionNorm: number } {
  if (logLikelihoods.length !== choices.length) throw new Error(`${logLikelihoods.length} log-likelihoods for ${choices.length} choices`);
  const lengths = choices.map(byteLength);
  if (lengths.some((n) => n === 0)) throw new Error("acc_norm: a choice is the empty string");
  const prediction = argmax(logLikelihoods);
  const predictionNorm = argmax(logLikelihoods.map((ll, i) => ll / lengths[i]));
  return { acc: prediction === gold ? 1 : 0, acc_norm: predictionNorm === gold ? 1 : 0, prediction, predictionNorm };
}

// ---------------------------------------------------------------------------------------------
// Aggregation

export interface Aggregate {
  value: number;
  /** Standard error of the mean (sample standard deviation / √n); null below two items. */
  stderr: number | null;
  n: number;
}

/** Mean and its standard error, as lm-evaluation-harness's mean / mean_stderr (ddof = 1). */
export function meanWithStderr(values: readonly number[]): Aggregate {
  const n = values.length;
  if (n === 0) return { value: NaN, stderr: null, n };
  const mean = values.reduce((a, v) => a + v, 0) / n;
  if (n < 2) return { value: mean, stderr: null, n };
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  return { value: mean, stderr: Math.sqrt(variance / n), n };
}

/** exp of the negative mean log-likelihood per token over all items (a corpus-level value: no stderr). */
export function perplexity(logLikelihoods: readonly number[], tokenCounts: readonly number[]): number {
  const total = tokenCounts.reduce((a, v) => a + v, 0);
  return Math.exp(-logLikelihoods.reduce((a, v) => a + v, 0) / total);
}

/** Bits per UTF-8 byte of the scored text: −Σ log p / (ln 2 · Σ bytes). */
export function bitsPerByte(logLikelihoods: readonly number[], byteCounts: readonly number[]): number {
  const total = byteCounts.reduce((a, v) => a + v, 0);
  return -logLikelihoods.reduce((a, v) => a + v, 0) / (Math.LN2 * total);
}

// ---------------------------------------------------------------------------------------------
// Metric names by output type

export const METRICS_BY_OUTPUT_TYPE = {
  multiple_choice: ["acc", "acc_norm"],
  generate_until: ["exact_match", "f1", "rouge_l"],
  loglikelihood: ["loglikelihood", "perplexity", "bits_per_byte"],
  /** A sequence-classification model's own head (BERT): the argmax label against the gold one. */
  classification: ["acc"],
} as const;

export type OutputType = keyof typeof METRICS_BY_OUTPUT_TYPE;
export type MetricName = (typeof METRICS_BY_OUTPUT_TYPE)[OutputType][number];
export const METRIC_NAMES = [...new Set(Object.values(METRICS_BY_OUTPUT_TYPE).flat())] as MetricName[];

/** Where larger is better (used to say "gain" or "drop" in the forgetting report). */
export function higherIsBetter(metric: string): boolean {
  return !/^(perplexity|bits_per_byte)/.test(metric);
}
