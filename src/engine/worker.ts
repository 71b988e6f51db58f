// ggml ends the process with SIGABRT on a failed assert. Heavy jobs therefore run in a child
// process supervised from here, so that an abort becomes an error carrying ggml's own message
// (native.ts writes it to stderr behind ABORT_MARKER) instead of a silently killed CLI.
import { spawn } from "node:child_process";
import { ABORT_MARKER } from "./native.ts";

export class NativeAbortError extends Error {
  constructor(readonly ggmlMessage: string) {
    super(`ggml aborted: ${ggmlMessage}`);
    this.name = "NativeAbortError";
  }
}

/** Set in the child so that it runs the job instead of supervising again. */
export const WORKER_ENV = "TASKTUNE_WORKER";

export function isWorker(): boolean {
  return process.env[WORKER_ENV] === "1";
}

/**
 * Runs `node <script> ...args` with stdout passed through and stderr forwarded except the abort
 * marker. Resolves with the child's exit code; rejects with NativeAbortError when ggml aborted it.
 */
export function runSupervised(script: string, args: readonly string[], nodeArgs: readonly string[] = []): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
      stdio: ["inherit", "inherit", "pipe"],
      env: { ...process.env, [WORKER_ENV]: "1" },
    });
    let abortMessage: string | undefined;
    let pending = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        const at = line.indexOf(ABORT_MARKER);
        if (at >= 0) abortMessage = line.slice(at + ABORT_MARKER.length);
        else process.stderr.write(`${line}\n`);
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (pending) process.stderr.write(pending);
      if (abortMessage !== undefined || signal === "SIGABRT") {
        reject(new NativeAbortError(abortMessage ?? "the process received SIGABRT"));
      } else if (signal) {
        reject(new Error(`the worker process was killed by ${signal}`));
      } else {
        resolve(code ?? 1);
      }
    });
  });
}
