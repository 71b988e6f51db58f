// `npm run bench [-- --json] [-- --rounds N] [-- name ...]`: each configuration's training step in
// tasktune and, where `python3 -c "import torch, peft"` works, in PyTorch + PEFT on the same machine
// in the same run, with the ratio ours/theirs (tokens/s). With --rounds N the two alternate N times
// and each side reports its median round, so that a spell of a slower machine falls on both.
// One JSON object per line with --json.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { BENCH_CONFIGS } from "./configs.ts";

const args = process.argv.slice(2);
const json = args.includes("--json");
const roundsAt = args.indexOf("--rounds");
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 1;
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${args[roundsAt + 1]}`);
const only = args.filter((a, i) => !a.startsWith("--") && i !== roundsAt + 1);
const here = import.meta.dirname;
const hasTorch = spawnSync("python3", ["-c", "import torch, peft, transformers"]).status === 0;

function runJson(command: string, commandArgs: string[]): Record<string, unknown> {
  const run = spawnSync(command, commandArgs, { encoding: "utf8", env: { ...process.env, TASKTUNE_THREADS: undefined } });
  const line = run.stdout.trim().split("\n").pop() ?? "";
  if (run.status !== 0 || !line.startsWith("{")) throw new Error(`${command} ${commandArgs.join(" ")} failed:\n${run.stderr.slice(-2000)}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** The round with the median tokens/s. */
function median(results: Record<string, unknown>[]): Record<string, unknown> {
  return [...results].sort((a, b) => (a.tokens_per_s as number) - (b.tokens_per_s as number))[Math.floor(results.length / 2)];
}

for (const config of BENCH_CONFIGS.filter((c) => only.length === 0 || only.includes(c.name))) {
  const oursRounds: Record<string, unknown>[] = [];
  const theirsRounds: Record<string, unknown>[] = [];
  for (let round = 0; round < rounds; round++) {
    oursRounds.push(runJson(process.execPath, ["--import", "tsx", path.join(here, "tasktune-step.ts"), config.name]));
    if (hasTorch) theirsRounds.push(runJson("python3", [path.join(here, "torch_bench.py"), JSON.stringify(config)]));
  }
  const ours = median(oursRounds);
  const result: Record<string, unknown> = { ...ours, threads: config.threads, batch: config.batchSize, seq: config.seqLen };
  if (rounds > 1) result.rounds_tokens_per_s = oursRounds.map((r) => r.tokens_per_s);
  if (hasTorch) {
    const theirs = median(theirsRounds);
    result.pytorch = rounds > 1 ? { ...theirs, rounds_tokens_per_s: theirsRounds.map((r) => r.tokens_per_s) } : theirs;
    result.ratio = Number(((ours.tokens_per_s as number) / (theirs.tokens_per_s as number)).toFixed(3));
  }
  process.stdout.write(json ? `${JSON.stringify(result)}\n` : `${config.name} (${ours.backend}): ${ours.tokens_per_s} tokens/s, ${ours.step_ms} ms/step, ${ours.peak_rss_mb} MB peak` +
    (hasTorch ? `; PyTorch ${(result.pytorch as Record<string, unknown>).tokens_per_s} tokens/s, ${(result.pytorch as Record<string, unknown>).peak_rss_mb} MB; ratio ${result.ratio}` : "; PyTorch not installed") + "\n");
}
