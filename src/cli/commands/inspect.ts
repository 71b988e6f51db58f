import fs from "node:fs";
import path from "node:path";
import { Backend } from "../../engine/backend.ts";
import { openGguf } from "../../io/gguf.ts";
import { loadConfig } from "../../io/hf-config.ts";
import { openCheckpoint } from "../../io/safetensors.ts";
import { parseCommand } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune inspect <path> [--json]

Describes a Hugging Face checkpoint folder, a PEFT adapter folder, a safetensors file or a GGUF
file: architecture, parameter count, dtypes and the tensor table.`;

interface Report {
  path: string;
  kind: string;
  config?: Record<string, unknown>;
  parameters: number;
  dtypes: Record<string, number>;
  tensors: { name: string; dtype: string; shape: number[] }[];
}

export const inspectCommand: Command = {
  summary: "describe a checkpoint, adapter, safetensors or GGUF file",
  usage: USAGE,
  // GGUF headers are read through ggml's gguf API.
  native: true,
  async run(args) {
    const { values, positionals } = parseCommand(args, { json: { type: "boolean" }, help: { type: "boolean", short: "h" } }, USAGE, true);
    if (positionals.length !== 1) throw new Error(`inspect takes one path\n\n${USAGE}`);
    const target = positionals[0];
    const report = target.endsWith(".gguf") ? inspectGguf(target, await Backend.open({ device: "cpu" })) : inspect(target);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : render(report));
  },
};

export function inspect(target: string): Report {
  if (!fs.existsSync(target)) throw new Error(`${target}: no such file or folder`);
  const isDir = fs.statSync(target).isDirectory();
  let kind = "safetensors file";
  let config: Record<string, unknown> | undefined;
  let fileName = "model.safetensors";
  if (isDir && fs.existsSync(path.join(target, "adapter_config.json"))) {
    kind = "PEFT adapter";
    config = JSON.parse(fs.readFileSync(path.join(target, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    fileName = "adapter_model.safetensors";
  } else if (isDir) {
    const parsed = loadConfig(target);
    kind = `${parsed.modelType} (${parsed.family} family)`;
    config = { ...parsed };
  }
  const checkpoint = openCheckpoint(target, fileName);
  try {
    const tensors = [...checkpoint.tensors.values()];
    const dtypes: Record<string, number> = {};
    for (const t of tensors) dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + elements(t);
    return {
      path: target, kind, config,
      parameters: tensors.reduce((n, t) => n + elements(t), 0),
      dtypes,
      tensors: tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
    };
  } finally {
    checkpoint.close();
  }
}

function inspectGguf(target: string, backend: Backend): Report {
  const file = openGguf(target, backend);
  try {
    const tensors = [...file.tensors.values()];
    const dtypes: Record<string, number> = {};
    for (const t of tensors) dtypes[t.ggmlType] = (dtypes[t.ggmlType] ?? 0) + elements(t);
    // Token lists and merges run to tens of thousands of entries: show their length instead.
    const config = Object.fromEntries([...file.metadata].map(([key, v]) => [key,
      v.type === "array" ? `[${v.itemType} x ${v.value.length}]` : typeof v.value === "bigint" ? Number(v.value) : v.value]));
    return {
      path: target, kind: `GGUF v${file.version} (${String(config["general.architecture"] ?? "unknown architecture")})`, config,
      parameters: tensors.reduce((n, t) => n + elements(t), 0), dtypes,
      tensors: tensors.map((t) => ({ name: t.name, dtype: t.ggmlType, shape: [...t.shape] })),
    };
  } finally {
    file.close();
  }
}

function elements(t: { readonly shape: readonly number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

function render(r: Report): string {
  const lines = [`${r.path}: ${r.kind}`, `parameters: ${r.parameters.toLocaleString("en-US")}`,
    `dtypes: ${Object.entries(r.dtypes).map(([d, n]) => `${d} ${n.toLocaleString("en-US")}`).join(", ")}`];
  if (r.config) {
    const scalars = Object.entries(r.config).filter(([, v]) => v !== null && v !== undefined && typeof v !== "object").map(([k, v]) => `${k}=${v}`);
    lines.push(`config: ${scalars.join(" ")}`);
  }
  const width = Math.max(...r.tensors.map((t) => t.name.length));
  lines.push("", `${"tensor".padEnd(width)}  dtype  shape`);
  for (const t of r.tensors) lines.push(`${t.name.padEnd(width)}  ${t.dtype.padEnd(5)}  [${t.shape.join(", ")}]`);
  return `${lines.join("\n")}\n`;
}
