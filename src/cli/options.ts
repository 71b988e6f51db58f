// Shared option parsing: node's parseArgs with errors that name the option, and the device options
// every native command takes.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { Backend, DEVICE_CHOICES, type DeviceChoice } from "../engine/backend.ts";

export const DEVICE_OPTIONS = {
  device: { type: "string", default: "cpu" },
  threads: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export const DEVICE_USAGE = `  --device cpu|cuda|vulkan|auto   compute device (default cpu)\n  --threads N                     CPU threads (default: all cores)`;

type Options = NonNullable<ParseArgsConfig["options"]>;

export function parseCommand<O extends Options>(args: string[], options: O, usage: string, allowPositionals = false) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n\n${usage}`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  return parsed;
}

export function requireOption(values: Record<string, unknown>, name: string, usage: string): string {
  const value = values[name];
  if (typeof value !== "string" || value === "") throw new Error(`--${name} is required\n\n${usage}`);
  return value;
}

/** An integer option ≥ min, or undefined when it is absent. */
export function integerOption(values: Record<string, unknown>, name: string, min: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${raw}"`);
  return n;
}

export async function openBackend(values: { device?: string; threads?: string }): Promise<Backend> {
  const device = (values.device ?? "cpu") as DeviceChoice;
  if (!DEVICE_CHOICES.includes(device)) throw new Error(`--device must be one of ${DEVICE_CHOICES.join(", ")}, got "${values.device}"`);
  return Backend.open({ device, threads: integerOption(values, "threads", 1) });
}

/** 5GB, 500MB, 2GiB or a byte count. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/i.exec(text.trim());
  if (!m) throw new Error(`--max-shard-size must look like 5GB, 500MB or a byte count, got "${text}"`);
  const unit = (m[2] ?? "B").toLowerCase();
  const factor: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  const bytes = Math.floor(Number(m[1]) * factor[unit]!);
  if (bytes < 1) throw new Error(`--max-shard-size must be at least 1 byte, got "${text}"`);
  return bytes;
}
