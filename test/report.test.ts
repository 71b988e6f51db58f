import { after, test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { FormatError } from "../src/io/errors.ts";
import { renderReport, summarizeMetrics, writeReport, type ReportInput } from "../src/report/html.ts";
import { METRICS_FILE, MetricsFormatError, MetricsLog, readMetrics, truncateMetricsAfter, type MetricsRecord } from "../src/report/metrics.ts";
import { TrainingProgress } from "../src/report/progress.ts";

const root = mkdtempSync(join(tmpdir(), "tasktune-report-"));
after(() => rmSync(root, { recursive: true, force: true }));

let dirCount = 0;
function freshDir(): string {
  return join(root, `case-${++dirCount}`);
}

/** `steps` train records, plus an eval record every `evalEvery` steps, as a trainer would log them. */
function syntheticMetrics(steps: number, evalEvery = 10): MetricsRecord[] {
  const records: MetricsRecord[] = [];
  for (let step = 1; step <= steps; step++) {
    const loss = 0.9 + 1.6 * Math.exp(-step / 25) + 0.05 * Math.sin(step);
    records.push({
      step, loss, lr: step <= 10 ? 2e-5 * step : 2e-4, tokens_per_s: 1000 + step, elapsed_s: step * 0.5,
      "loss/task_a": loss * 0.9, "loss/task_b": loss * 1.1,
    });
    if (step % evalEvery === 0) {
      records.push({ step, eval_loss: 3 - step / 100 + (step === 20 ? -1 : 0), eval_accuracy: step / 200, "eval_loss/task_a": 2.5 });
    }
  }
  return records;
}

function writeLog(dir: string, records: readonly MetricsRecord[], options?: { resumeFromStep?: number }): string {
  const log = new MetricsLog(dir, options);
  for (const r of records) log.append(r);
  log.close();
  return log.file;
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl

test("MetricsLog round-trips records through readMetrics, NaN included", () => {
  const records = [...syntheticMetrics(12), { step: 13, loss: Number.NaN, lr: 1e-4 }];
  const file = writeLog(freshDir(), records);
  assert.equal(file.endsWith(METRICS_FILE), true);
  const lines = readFileSync(file, "utf8").split("\n");
  assert.equal(lines.length, records.length + 1, "one line per record plus the final newline");
  assert.match(lines[0]!, /^\{"step":1,/);
  assert.equal(lines.at(-2), '{"step":13,"loss":null,"lr":0.0001}');
  assert.deepEqual(readMetrics(file), records);
});

test("a fresh MetricsLog replaces an earlier run's log; append validates records and refuses after close", () => {
  const dir = freshDir();
  writeLog(dir, syntheticMetrics(5));
  const log = new MetricsLog(dir);
  log.append({ step: 1, loss: 2 });
  assert.throws(() => log.append({ step: 1.5, loss: 2 }), /"step" must be a non-negative integer/);
  assert.throws(() => log.append({ step: 2, loss: "2" as unknown as number }), /"loss" must be a number, got "2"/);
  log.close();
  log.close();
  assert.throws(() => log.append({ step: 3 }), /append after close/);
  assert.deepEqual(readMetrics(log.file), [{ step: 1, loss: 2 }]);
});

test("readMetrics names file:line of a bad line", () => {
  const file = join(mkdtempSync(join(root, "bad-")), METRICS_FILE);
  writeFileSync(file, '{"step":1,"loss":2.5}\n\n{"step":2,"loss":2.4\n');
  assert.throws(() => readMetrics(file), (err: unknown) => {
    assert.ok(err instanceof MetricsFormatError && err instanceof FormatError);
    assert.equal(err.line, 3);
    assert.match(err.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3: invalid JSON`));
    return true;
  });
  writeFileSync(file, '{"step":1}\n{"loss":2}\n');
  assert.throws(() => readMetrics(file), new RegExp(`${METRICS_FILE}:2: "step" must be a non-negative integer, got undefined`));
  writeFileSync(file, '{"step":1}\n{"step":2,"note":"hi"}\n');
  assert.throws(() => readMetrics(file), new RegExp(`${METRICS_FILE}:2: "note" must be a number`));
  writeFileSync(file, "[1,2]\n");
  assert.throws(() => readMetrics(file), new RegExp(`${METRICS_FILE}:1: expected a JSON object`));
});

test("truncateMetricsAfter drops records after the resume step, atomically", () => {
  const dir = freshDir();
  const records = syntheticMetrics(30);
  const file = writeLog(dir, records);
  const removed = truncateMetricsAfter(file, 20);
  assert.equal(removed, records.filter((r) => r.step > 20).length);
  assert.deepEqual(readMetrics(file), records.filter((r) => r.step <= 20), "the eval at step 20 stays");
  assert.deepEqual(readdirSync(dir), [METRICS_FILE], "no temp file left behind");
  assert.equal(truncateMetricsAfter(file, 20), 0);
  assert.equal(truncateMetricsAfter(join(dir, "missing.jsonl"), 3), 0);
  assert.throws(() => truncateMetricsAfter(file, -1), RangeError);
});

test("resuming drops a torn last line and yields the same log as an uninterrupted run", () => {
  const records = syntheticMetrics(30);
  const uninterrupted = writeLog(freshDir(), records);

  const dir = freshDir();
  const file = writeLog(dir, records.filter((r) => r.step <= 27));
  appendFileSync(file, '{"step":28,"loss":1.0'); // the process died mid-append
  assert.throws(() => readMetrics(file), /:\d+: invalid JSON/);
  writeLog(dir, records.filter((r) => r.step > 20), { resumeFromStep: 20 });
  assert.equal(readFileSync(file, "utf8"), readFileSync(uninterrupted, "utf8"));
});

test("truncateMetricsAfter still rejects a bad line that is not the torn tail", () => {
  const file = join(mkdtempSync(join(root, "bad-")), METRICS_FILE);
  writeFileSync(file, '{"step":1}\nnot json\n{"step":2}\n');
  assert.throws(() => truncateMetricsAfter(file, 1), /:2: invalid JSON/);
});

// ---------------------------------------------------------------------------------------------
// report.html

const EVIL = "</script><b>x</b>";

function reportInput(): ReportInput {
  return {
    title: `run <img src=x onerror=alert(1)> ${EVIL}`,
    config: { model: "llama-tiny", optimizer: { name: "adamw", lr: 2e-4 }, note: `evil ${EVIL}` },
    metrics: [...syntheticMetrics(100), { step: 100, [`loss/${EVIL}`]: 1.5 }],
    tables: [{ title: "Per task", columns: ["task", "eval_loss", "n"], rows: [["task_a", 0.95123, 500], [EVIL, null, 7]] }],
    notes: [`resumed ${EVIL}`],
  };
}

/** The page's embedded chart data, parsed as the page's own script does. */
function embeddedData(html: string): { charts: { title: string; series: { label: string; points: [number, number | null][] }[] }[]; steps: [number, number] } {
  const match = /<script type="application\/json" id="report-data">([^]*?)<\/script>/.exec(html);
  assert.ok(match, "embedded data element");
  return JSON.parse(match[1]!);
}

test("renderReport inlines Chart.js and embeds the chart data", () => {
  const html = renderReport(reportInput());
  assert.match(html, /^<!DOCTYPE html>/);
  assert.match(html, /Chart\.js v4\.\d+\.\d+/, "library banner");
  assert.ok(html.length > 150_000, "the whole UMD bundle is inlined");
  assert.match(html, /new Chart\(/);

  const data = embeddedData(html);
  assert.deepEqual(data.steps, [1, 100]);
  const titles = data.charts.map((c) => c.title);
  assert.deepEqual(titles, ["Loss", "Learning rate", "Throughput (tokens/s)", "eval_accuracy", "Loss per task"]);
  const loss = data.charts[0]!;
  assert.deepEqual(loss.series.map((s) => s.label), ["train loss", "eval loss"]);
  assert.equal(loss.series[0]!.points.length, 100);
  assert.deepEqual(loss.series[1]!.points.map(([step]) => step), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  assert.deepEqual(data.charts[1]!.series[0]!.points[0], [1, 2e-5]);
  const perTask = data.charts[4]!.series.map((s) => s.label);
  assert.deepEqual(perTask, ["task_a (train)", "task_a (eval)", "task_b (train)", `${EVIL} (train)`], "labels survive JSON escaping");
  for (const id of titles.keys()) assert.match(html, new RegExp(`<canvas id="chart-${id}">`));
});

test("renderReport escapes text so nothing breaks out of its element", () => {
  const html = renderReport(reportInput());
  assert.equal(html.includes(EVIL), false);
  assert.equal(html.includes("<img"), false);
  assert.match(html, /<title>run &#60;img src=x onerror=alert\(1\)&#62; &#60;\/script&#62;&#60;b&#62;x&#60;\/b&#62;<\/title>/);
  assert.match(html, /note: evil &#60;\/script&#62;&#60;b&#62;x&#60;\/b&#62;/, "config string in the <pre>");
  assert.match(html, /<li>resumed &#60;\/script&#62;/);
  assert.match(html, /<td>&#60;\/script&#62;&#60;b&#62;x&#60;\/b&#62;<\/td><td>—<\/td><td class="num">7<\/td>/);
  // Exactly the three <script> elements the page opens are closed: no string ends one early.
  assert.equal(html.match(/<script\b/gi)!.length, 3);
  assert.equal(html.match(/<\/script/gi)!.length, 3);
});

test("renderReport references nothing online", () => {
  const html = renderReport(reportInput());
  assert.doesNotMatch(html, /\b(src|href|action)\s*=\s*["']?\s*(https?:)?\/\//i);
  assert.doesNotMatch(html, /<link\b|<script[^>]*\bsrc=|<iframe\b/i);
  // Beyond the library's license banner, which names its home page, no URL appears at all.
  const outsideLibrary = html.replace(/<script>\/\*![^]*?<\/script>/, "");
  assert.notEqual(outsideLibrary.length, html.length, "library script located");
  assert.doesNotMatch(outsideLibrary, /https?:\/\/|@import|\burl\(/i);
});

test("summarizeMetrics reports final loss, best eval, steps, wall time and median throughput", () => {
  const summary = Object.fromEntries(summarizeMetrics(syntheticMetrics(100)).map((s) => [s.label, s]));
  const lastLoss = 0.9 + 1.6 * Math.exp(-4) + 0.05 * Math.sin(100);
  assert.equal(summary["Final train loss"]!.value, String(Number(lastLoss.toPrecision(4))));
  assert.deepEqual(summary["Best eval loss"], { label: "Best eval loss", value: "1.8", detail: "step 20 (min)" });
  assert.deepEqual(summary["Best eval accuracy"], { label: "Best eval accuracy", value: "0.5", detail: "step 100 (max)" });
  assert.equal(summary["Steps"]!.value, "100");
  assert.equal(summary["Wall time"]!.value, "0:50");
  assert.equal(summary["Tokens/s (median)"]!.value, "1,051");
});

test("an empty run still renders", () => {
  const html = renderReport({ title: "empty", config: {}, metrics: [] });
  assert.match(html, /No metrics recorded\./);
  assert.deepEqual(embeddedData(html).charts, []);
});

test("writeReport replaces the file atomically", () => {
  const dir = mkdtempSync(join(root, "report-"));
  const file = join(dir, "report.html");
  writeFileSync(file, "old");
  writeReport(file, reportInput());
  assert.equal(readFileSync(file, "utf8"), renderReport(reportInput()));
  assert.deepEqual(readdirSync(dir), ["report.html"]);
});

// ---------------------------------------------------------------------------------------------
// progress

function capture(isTTY: boolean): { stream: PassThrough & { isTTY: boolean; columns: number }; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY, columns: 100 });
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

test("TrainingProgress prints plain lines every N steps when not on a terminal", () => {
  const { stream, text } = capture(false);
  let clock = 0;
  const progress = new TrainingProgress({ stream, logEvery: 20, now: () => clock });
  progress.start(100);
  for (let step = 1; step <= 100; step++) {
    clock += 500;
    progress.update({ step, loss: step === 20 ? 2.3141 : 2, lr: 1e-4, tokensPerS: 1234.4 });
    if (step === 30) progress.log("eval: eval_loss 2.1");
  }
  progress.stop();
  assert.equal(text(), [
    "step 20/100 loss 2.314 lr 1.0e-4 1234 tok/s eta 0:40",
    "eval: eval_loss 2.1",
    "step 40/100 loss 2.000 lr 1.0e-4 1234 tok/s eta 0:30",
    "step 60/100 loss 2.000 lr 1.0e-4 1234 tok/s eta 0:20",
    "step 80/100 loss 2.000 lr 1.0e-4 1234 tok/s eta 0:10",
    "step 100/100 loss 2.000 lr 1.0e-4 1234 tok/s eta 0:00",
    "",
  ].join("\n"));
});

test("a resumed TrainingProgress counts ETA from the resume step and prints the last step on stop", () => {
  const { stream, text } = capture(false);
  let clock = 0;
  const progress = new TrainingProgress({ stream, logEvery: 10, now: () => clock });
  progress.start(1000, 40);
  for (let step = 43; step <= 55; step += 3) {
    clock += 3000;
    progress.update({ step, loss: 1.5 });
  }
  progress.stop();
  // Steps skip 50 but cross it at 52; 12 steps took 12 s, so the 948 left take 15:48.
  assert.equal(text(), "step 52/1000 loss 1.500 eta 15:48\nstep 55/1000 loss 1.500 eta 15:45\n");
});

test("TrainingProgress draws a cli-progress bar on a terminal, with log lines above it", () => {
  const { stream, text } = capture(true);
  const progress = new TrainingProgress({ stream });
  progress.start(10);
  progress.update({ step: 5, loss: 2.5, lr: 3e-4, tokensPerS: 900 });
  progress.log("checkpoint saved");
  progress.stop();
  const out = text();
  assert.match(out, /checkpoint saved\n/);
  assert.match(out, /5\/10 \| loss 2\.500 \| lr 3\.0e-4 \| 900 tok\/s \| eta \d+:\d\d/);
  assert.ok(out.indexOf("checkpoint saved") < out.lastIndexOf("5/10"), "the bar is redrawn below the message");
});
