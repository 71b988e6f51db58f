// Classification tasks over a list of digits: every completion is one of a few choices, so
// accuracy is scored by log-likelihood (multiple choice). All prompts start "Digits: …" and differ
// in the question line, so that the tasks can be mixed in one run.
import { z } from "zod";
import { checkLengths, DIGIT_CHOICES, digitList, lengthOptions, type SyntheticTask } from "./common.ts";

const listOptions = checkLengths(z.strictObject(lengthOptions(4, 8)));
type ListOptions = z.infer<typeof listOptions>;

export const extremeDigit: SyntheticTask<ListOptions> = {
  description: "the largest or the smallest digit of a list of 4 to 8 digits",
  options: listOptions,
  choices: DIGIT_CHOICES,
  rows: (o, random) => () => {
    const digits = digitList(random, o.min_length, o.max_length);
    const largest = random() < 0.5;
    return {
      prompt: `Digits: ${digits.join(" ")}\n${largest ? "Largest" : "Smallest"}:`,
      completion: ` ${largest ? Math.max(...digits) : Math.min(...digits)}`,
    };
  },
};

export const digitParity: SyntheticTask<ListOptions> = {
  description: "whether the sum of a list of digits is even or odd",
  options: listOptions,
  choices: [" even", " odd"],
  rows: (o, random) => () => {
    const digits = digitList(random, o.min_length, o.max_length);
    const sum = digits.reduce((a, b) => a + b, 0);
    return { prompt: `Digits: ${digits.join(" ")}\nSum is:`, completion: sum % 2 === 0 ? " even" : " odd" };
  },
};

const sortedOptions = checkLengths(z.strictObject({
  // A list of one digit is always in order.
  ...lengthOptions(4, 8, 2),
  sorted_fraction: z.number().min(0).max(1).default(0.5).describe("share of rows whose list is in order (random lists almost never are)"),
}));

export const isSorted: SyntheticTask<z.infer<typeof sortedOptions>> = {
  description: "whether a list of digits is in non-decreasing order",
  options: sortedOptions,
  choices: [" no", " yes"],
  rows: (o, random) => () => {
    const inOrder = random() < o.sorted_fraction;
    let digits = digitList(random, o.min_length, o.max_length);
    if (inOrder) digits.sort((a, b) => a - b);
    else while (isNonDecreasing(digits)) digits = digitList(random, digits.length, digits.length);
    return { prompt: `Digits: ${digits.join(" ")}\nIn order:`, completion: inOrder ? " yes" : " no" };
  },
};

function isNonDecreasing(list: readonly number[]): boolean {
  return list.every((x, i) => i === 0 || list[i - 1] <= x);
}
