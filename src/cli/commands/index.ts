import { compareCommand } from "./compare.ts";
import { demoCommand } from "./demo.ts";
import { devicesCommand } from "./devices.ts";
import { evalCommand } from "./eval.ts";
import { exportCommand } from "./export.ts";
import { forwardCommand } from "./forward.ts";
import { generateCommand } from "./generate.ts";
import { inspectCommand } from "./inspect.ts";
import { mergeCommand } from "./merge.ts";
import { trainCommand } from "./train.ts";

export interface Command {
  summary: string;
  usage: string;
  /** Runs ggml graphs: executed in a supervised child process. */
  native: boolean;
  run(args: string[]): Promise<void>;
}

export const COMMANDS: Record<string, Command> = {
  demo: demoCommand,
  train: trainCommand,
  eval: evalCommand,
  generate: generateCommand,
  compare: compareCommand,
  forward: forwardCommand,
  merge: mergeCommand,
  export: exportCommand,
  inspect: inspectCommand,
  devices: devicesCommand,
};

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `tasktune: fine-tune, merge, evaluate and export transformer models on ggml\n\nUsage: tasktune <command> [options]\n\nCommands:\n${lines.join("\n")}\n\nRun \`tasktune <command> --help\` for a command's options.\n`;
}
