// `npm run bench [-- --json] [-- --rounds N] [-- --gpu] [-- name ...]`: each configuration's
// training step in tasktune and, where `python3 -c "import torch, peft"` works, in PyTorch + PEFT
// on the same machine in the same run, with the ratio ours/theirs (tokens/s). With --rounds N the
// two alternate N times and each side reports its median round, so that a spell of a slower machine
// falls on both. --gpu runs the CUDA configurations instead of the CPU ones (bench/gpu-check.sh
// prepares a GPU machine). One JSON object per line with --json.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { BENCH_CONFIGS } from "./configs.ts";

const args = process.argv.slice(2);
const json = args.includes("--json");
const roundsAt = args.indexOf("--rounds");
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 1;
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${args[roundsAt + 1]}`);
const only = args.filter((a, i) => !a.startsWith("--") && i !== roundsAt + 1);
const gpu = args.includes("--gpu");
const here = import.meta.dirname;
const hasTorch = spawnSync("python3", ["-c", "import torch, peft, transformers"]).status === 0;

/** One JSON line from a bench process, or what stopped it (a configuration the GPU cannot run yet). */
function runJson(command: string, commandArgs: string[]): Record<string, unknown> {
  const run = spawnSync(command, commandArgs, { encoding: "utf8", env: { ...process.env, TASKTUNE_THREADS: undefined } });
  const line = run.stdout.trim().split("\n").pop() ?? "";
  if (run.status !== 0 || !line.startsWith("{")) return { error: run.stderr.trim().split("\n").slice(-6).join("\n").slice(-1500) || `exit ${run.status}` };
  return JSON.parse(line) as Record<string, unknown>;
}

/** The round with the median tokens/s (a failed round counts as the slowest). */
function median(results: Record<string, unknown>[]): Record<string, unknown> {
  const speed = (r: Record<string, unknown>) => (r.tokens_per_s as number | undefined) ?? -1;
  return [...results].sort((a, b) => speed(a) - speed(b))[Math.floor(results.length / 2)];
}

const describe = (r: Record<string, unknown>) => r.error ? `failed: ${r.error}` : `${r.tokens_per_s} tokens/s, ${r.step_ms} ms/step, ${r.peak_rss_mb} MB peak RSS`;

for (const config of BENCH_CONFIGS.filter((c) => (only.length ? only.includes(c.name) : Boolean(c.device) === gpu))) {
  const oursRounds: Record<string, unknown>[] = [];
  const theirsRounds: Record<string, unknown>[] = [];
  for (let round = 0; round < rounds; round++) {
    oursRounds.push(runJson(process.execPath, ["--import", "tsx", path.join(here, "tasktune-step.ts"), config.name]));
    if (hasTorch) theirsRounds.push(runJson("python3", [path.join(here, "torch_bench.py"), JSON.stringify(config)]));
  }
  const ours = median(oursRounds);
  const result: Record<string, unknown> = { name: config.name, ...ours, threads: config.threads, batch: config.batchSize, seq: config.seqLen };
  if (rounds > 1) result.rounds_tokens_per_s = oursRounds.map((r) => r.tokens_per_s ?? null);
  const theirs = hasTorch ? median(theirsRounds) : undefined;
  if (theirs) {
    result.pytorch = rounds > 1 ? { ...theirs, rounds_tokens_per_s: theirsRounds.map((r) => r.tokens_per_s ?? null) } : theirs;
    if (!ours.error && !theirs.error) result.ratio = Number(((ours.tokens_per_s as number) / (theirs.tokens_per_s as number)).toFixed(3));
  }
  process.stdout.write(json ? `${JSON.stringify(result)}\n` : `${config.name} (${ours.backend ?? config.device ?? "cpu"}): ${describe(ours)}` +
    (theirs ? `; PyTorch ${describe(theirs)}${result.ratio ? `; ratio ${result.ratio}` : ""}` : "; PyTorch not installed") + "\n");
}
