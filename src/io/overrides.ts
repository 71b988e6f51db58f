// `--set a.b=value` overrides of a nested options object, shared by the commands that take them
// (training configs, generator options) so that both read values the same way.
import YAML from "yaml";

/** `a.b.c=value`, value parsed as YAML (so numbers, booleans and lists keep their types). */
export function applyOverride(target: Record<string, unknown>, override: string): void {
  const eq = override.indexOf("=");
  if (eq <= 0) throw new Error(`--set expects key=value, got "${override}"`);
  const keys = override.slice(0, eq).split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]] = YAML.parse(override.slice(eq + 1));
}
