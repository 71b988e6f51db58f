// tasktune's command line. Commands that run ggml graphs execute in a supervised child process
// (engine/worker.ts) so that a native abort is reported with ggml's message.
import { fileURLToPath } from "node:url";
import { isWorker, runSupervised } from "../engine/worker.ts";
import { COMMANDS, usage } from "./commands/index.ts";

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage());
    return name ? 0 : 1;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`tasktune: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (command.native && !isWorker()) {
    const bin = fileURLToPath(new URL("../../bin/tasktune.js", import.meta.url));
    return runSupervised(bin, argv);
  }
  await command.run(args);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`tasktune: error: ${message}\n`);
    if (process.env.TASKTUNE_DEBUG === "1" && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  },
);
