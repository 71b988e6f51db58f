// `npm run bench [-- --json] [-- name ...]`: each configuration's training step in tasktune and,
// where `python3 -c "import torch, peft"` works, in PyTorch + PEFT on the same machine in the same
// run, with the ratio ours/theirs (tokens/s). One JSON object per line with --json.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { BENCH_CONFIGS } from "./configs.ts";

const args = process.argv.slice(2);
const json = args.includes("--json");
const only = args.filter((a) => !a.startsWith("--"));
const here = import.meta.dirname;
const hasTorch = spawnSync("python3", ["-c", "import torch, peft, transformers"]).status === 0;

function runJson(command: string, commandArgs: string[]): Record<string, unknown> {
  const run = spawnSync(command, commandArgs, { encoding: "utf8", env: { ...process.env, TASKTUNE_THREADS: undefined } });
  const line = run.stdout.trim().split("\n").pop() ?? "";
  if (run.status !== 0 || !line.startsWith("{")) throw new Error(`${command} ${commandArgs.join(" ")} failed:\n${run.stderr.slice(-2000)}`);
  return JSON.parse(line) as Record<string, unknown>;
}

for (const config of BENCH_CONFIGS.filter((c) => only.length === 0 || only.includes(c.name))) {
  const ours = runJson(process.execPath, ["--import", "tsx", path.join(here, "tasktune-step.ts"), config.name]);
  const result: Record<string, unknown> = { ...ours, threads: config.threads, batch: config.batchSize, seq: config.seqLen };
  if (hasTorch) {
    const theirs = runJson("python3", [path.join(here, "torch_bench.py"), JSON.stringify(config)]);
    result.pytorch = theirs;
    result.ratio = Number(((ours.tokens_per_s as number) / (theirs.tokens_per_s as number)).toFixed(3));
  }
  process.stdout.write(json ? `${JSON.stringify(result)}\n` : `${config.name} (${ours.backend}): ${ours.tokens_per_s} tokens/s, ${ours.step_ms} ms/step, ${ours.peak_rss_mb} MB peak` +
    (hasTorch ? `; PyTorch ${(result.pytorch as Record<string, unknown>).tokens_per_s} tokens/s, ${(result.pytorch as Record<string, unknown>).peak_rss_mb} MB; ratio ${result.ratio}` : "; PyTorch not installed") + "\n");
}
