// Jinja templates over the fields of a data row (@huggingface/jinja, the engine of chat templates).
// Unlike Jinja's default, a variable the row does not have is an error naming it and the row's
// fields, so a typo in a task file cannot silently produce empty prompts; `x is defined` and
// `x | default(...)` still work for optional fields.
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { FormatError } from "../io/errors.ts";

export class RowTemplate {
  private readonly template: Template;
  /** Names only ever used under `is defined` or `default`, which may be missing. */
  private readonly optional: Set<string>;

  /** Errors are FormatErrors of `file` that name `key`, e.g. `tasks/sst2.yaml: prompt: ...`. */
  constructor(readonly source: string, readonly file: string, readonly key: string) {
    try {
      this.template = new Template(source);
    } catch (error) {
      throw new FormatError(file, `${key}: template does not parse: ${(error as Error).message}`);
    }
    this.optional = guardedNames(this.template.parsed);
  }

  /** Renders with the row's fields as variables; `at` names the row in errors (file:line). */
  render(variables: Record<string, unknown>, at: string): string {
    const missing = new Set<string>();
    const env = new StrictEnvironment(missing);
    for (const [key, value] of Object.entries(GLOBALS)) env.set(key, value);
    for (const [key, value] of Object.entries(variables)) {
      if (!(key in GLOBALS)) env.set(key, value);
    }
    let text: string;
    try {
      text = new Interpreter(env).run(this.template.parsed).value as string;
    } catch (error) {
      throw new FormatError(this.file, `${this.key}: failed to render ${at}: ${(error as Error).message}`);
    }
    const unknown = [...missing].filter((name) => !this.optional.has(name));
    if (unknown.length) {
      throw new FormatError(this.file, `${this.key}: ${at} has no field ${unknown.map((n) => JSON.stringify(n)).join(", ")} (fields: ${Object.keys(variables).join(", ") || "none"})`);
    }
    return text;
  }
}

/** What Template.render puts in scope besides the caller's variables. */
const GLOBALS: Record<string, unknown> = {
  true: true, false: false, none: null, True: true, False: false, None: null,
  range: (start: number, stop?: number, step = 1) => {
    const [from, to] = stop === undefined ? [0, start] : [start, stop];
    const out: number[] = [];
    for (let i = from; step > 0 ? i < to : i > to; i += step) out.push(i);
    return out;
  },
  raise_exception: (message: string) => {
    throw new Error(message);
  },
};

/** The part of the package's Environment used here (its own .d.ts imports do not resolve under NodeNext). */
interface JinjaEnvironment {
  readonly variables: Map<string, unknown>;
  set(name: string, value: unknown): unknown;
  resolve(name: string): JinjaEnvironment;
}
const EnvironmentBase = Environment as unknown as new () => JinjaEnvironment;

/** The root scope: every lookup that reaches it and fails is a variable no scope defines. */
class StrictEnvironment extends EnvironmentBase {
  constructor(private readonly missing: Set<string>) {
    super();
  }

  override resolve(name: string): JinjaEnvironment {
    if (!this.variables.has(name)) this.missing.add(name);
    return super.resolve(name);
  }
}

interface Node {
  type?: string;
  [key: string]: unknown;
}

/** Identifiers tested with `is defined`/`is undefined`/`is none` or filtered with `default`/`d`. */
function guardedNames(root: unknown): Set<string> {
  const names = new Set<string>();
  const visit = (value: unknown): void => {
    if (Array.isArray(value)) {
      value.forEach(visit);
      return;
    }
    if (typeof value !== "object" || value === null) return;
    const node = value as Node;
    const operand = node.operand as Node | undefined;
    if (operand?.type === "Identifier") {
      const test = (node.test as Node | undefined)?.value;
      const filter = node.filter as Node | undefined;
      const filterName = filter?.type === "CallExpression" ? (filter.callee as Node).value : filter?.value;
      if (node.type === "TestExpression" && (test === "defined" || test === "undefined" || test === "none")) names.add(operand.value as string);
      if (node.type === "FilterExpression" && (filterName === "default" || filterName === "d")) names.add(operand.value as string);
    }
    for (const child of Object.values(node)) visit(child);
  };
  visit(root);
  return names;
}
