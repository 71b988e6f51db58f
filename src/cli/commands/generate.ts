import path from "node:path";
import { z } from "zod";
import { parseSyntheticOptions, SYNTHETIC_TASKS, writeSyntheticTask } from "../../data/synthetic.ts";
import { applyOverride } from "../../io/overrides.ts";
import { integerOption, parseCommand, requireOption } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune generate <task> --count N --out FILE.jsonl [--seed S] [--set key=value ...]
       tasktune generate --list

Writes rows of a generated task with exact answers (src/data/generators): the same task, options,
count and seed always give the same bytes.
  --count N         rows to write
  --out FILE        JSONL file to write
  --seed S          row seed (default 1)
  --set key=value   a generator option, e.g. --set fn=max --set noise.kind=dynamic --set noise.rate=0.3
  --list            the generators with their options and defaults`;

export const generateCommand: Command = {
  summary: "write a generated task (TInt traces with noise, sequences, key-value recall, classification) as JSONL",
  usage: USAGE,
  native: false,
  async run(args) {
    const { values, positionals } = parseCommand(args, {
      count: { type: "string" }, out: { type: "string" }, seed: { type: "string" }, set: { type: "string", multiple: true },
      list: { type: "boolean" }, help: { type: "boolean", short: "h" },
    }, USAGE, true);
    if (values.list) {
      process.stdout.write(listTasks());
      return;
    }
    if (positionals.length !== 1) throw new Error(`generate takes one task (${Object.keys(SYNTHETIC_TASKS).join(", ")})\n\n${USAGE}`);
    const [name] = positionals;
    const raw: Record<string, unknown> = {};
    for (const override of values.set ?? []) applyOverride(raw, override);
    const options = parseSyntheticOptions(name, raw);
    requireOption(values, "count", USAGE);
    const count = integerOption(values, "count", 1)!;
    const seed = integerOption(values, "seed", 0) ?? 1;
    const out = requireOption(values, "out", USAGE);
    writeSyntheticTask(name, out, count, seed, options);
    process.stdout.write(`${path.resolve(out)}: ${count} rows of ${name}, seed ${seed}, options ${JSON.stringify(options)}\n`);
  },
};

interface OptionSchema {
  type?: string;
  default?: unknown;
  description?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  properties?: Record<string, OptionSchema>;
}

/** Every generator: its description, choices, and one line per option (nested ones as a.b) with its default, as --set takes it. */
function listTasks(): string {
  return Object.entries(SYNTHETIC_TASKS).map(([name, task]) => {
    const schema = z.toJSONSchema(task.options, { io: "input" }) as OptionSchema;
    const lines = optionLines(schema.properties ?? {}, "");
    const width = Math.max(...lines.map(([key]) => key.length));
    const choices = task.choices ? `\n  choices: ${task.choices.map((c) => JSON.stringify(c)).join(" ")}` : "";
    return `${name}: ${task.description}${choices}\n${lines.map(([key, text]) => `  ${key.padEnd(width)}  ${text}`).join("\n")}\n`;
  }).join("\n");
}

function optionLines(properties: Record<string, OptionSchema>, prefix: string): [string, string][] {
  return Object.entries(properties).flatMap(([key, option]): [string, string][] => {
    if (option.properties) return optionLines(option.properties, `${prefix}${key}.`);
    const values = option.enum ? option.enum.join(" | ")
      : option.minimum !== undefined && option.maximum !== undefined && option.maximum < Number.MAX_SAFE_INTEGER ? `${option.type} ${option.minimum}..${option.maximum}`
      : option.type ?? "";
    return [[`${prefix}${key}=${String(option.default)}`, `(${values})${option.description ? ` ${option.description}` : ""}`]];
  });
}
