import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { stringify as toYaml } from "yaml";
import { writeFileAtomic } from "../io/files.ts";
import { formatDuration, formatNumber } from "./format.ts";
import type { MetricsRecord } from "./metrics.ts";

export interface ReportTable {
  title: string;
  columns: string[];
  rows: (string | number | null)[][];
}

export interface ReportInput {
  title: string;
  /** The run's configuration, shown as YAML. */
  config: Record<string, unknown>;
  metrics: readonly MetricsRecord[];
  tables?: ReportTable[];
  notes?: string[];
  /** Scatter charts drawn beside the metric charts (a comparison of methods has no step axis). */
  scatters?: ScatterChart[];
}

/**
 * A scatter chart: one colour per series, each point with optional error bars ([low, high] on
 * either axis), and faint sample points (the observations a point summarises, e.g. one per seed).
 */
export interface ScatterChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ScatterSeries[];
}

export interface ScatterSeries {
  label: string;
  points: { x: number; y: number; xRange?: [number, number]; yRange?: [number, number] }[];
  samples?: [number, number][];
}

/** One headline number of the summary. */
export interface SummaryItem {
  label: string;
  value: string;
  detail?: string;
}

/** A line chart: every series is plotted against the step. */
interface ChartSpec {
  title: string;
  /** Tick labels in exponent notation (learning rates). */
  scientific: boolean;
  series: { label: string; color: string; dashed: boolean; markers: boolean; points: [number, number][] }[];
}

const TRAIN_KEYS = new Set(["step", "loss", "lr", "tokens_per_s", "elapsed_s"]);
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#4b5563"];
// Name parts that mark a metric where smaller is better; anything else (accuracy, f1, bleu) is better when larger.
const LOWER_IS_BETTER = new Set(["loss", "perplexity", "ppl", "error", "err", "wer", "cer", "mse", "mae", "rmse"]);

/**
 * Renders a self-contained report, no network access needed to view it: a training run's summary
 * and charts when it has metrics, and any tables (an evaluation comparison has only those).
 */
export function renderReport(input: ReportInput): string {
  const metrics = [...input.metrics].sort((a, b) => a.step - b.step);
  const charts = chartSpecs(metrics);
  const scatters = (input.scatters ?? []).map((c) => ({ ...c, series: c.series.map((s, i) => ({ ...s, color: PALETTE[i % PALETTE.length]! })) }));
  const title = escapeHtml(input.title);
  const summary = summarizeMetrics(metrics)
    .map(({ label, value, detail }) =>
      `<div class="stat"><div class="label">${escapeHtml(label)}</div><div class="value">${escapeHtml(value)}</div>` +
      (detail ? `<div class="detail">${escapeHtml(detail)}</div>` : "") + `</div>`)
    .join("\n");
  const notes = input.notes?.length
    ? `<section class="card notes"><h2>Notes</h2><ul>${input.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join("")}</ul></section>`
    : "";
  const chartCard = (chartTitle: string, id: string) =>
    `<section class="card chart"><h3>${escapeHtml(chartTitle)}</h3><div class="canvas-box"><canvas id="${id}"></canvas></div></section>`;
  const cards = [...charts.map((c, i) => chartCard(c.title, `chart-${i}`)), ...scatters.map((c, i) => chartCard(c.title, `scatter-${i}`))];
  const chartCards = cards.length
    ? `<div class="charts">${cards.join("\n")}</div>`
    : `<section class="card"><p class="empty">No metrics recorded.</p></section>`;
  const tables = (input.tables ?? []).map(renderTable).join("\n");
  const config = escapeHtml(toYaml(input.config, { lineWidth: 0 }).trimEnd());

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<header><h1>${title}</h1><p class="subtitle">tasktune ${metrics.length ? `training report · ${metrics.length} metric records` : "report"}</p></header>
${metrics.length ? `<section class="summary">${summary}</section>` : ""}
${notes}
${cards.length || metrics.length || !tables ? `<h2>Charts</h2>\n${chartCards}` : ""}
${tables ? `<h2>Tables</h2>\n${tables}` : ""}
<h2>Configuration</h2>
<section class="card"><pre class="config">${config}</pre></section>
</main>
<noscript><p class="empty">Charts need JavaScript.</p></noscript>
<script type="application/json" id="report-data">${jsonForScript({ charts, scatters, steps: stepRange(metrics) })}</script>
<script>${chartLibrary()}</script>
<script>${CHART_SCRIPT}</script>
</body>
</html>
`;
}

/** Writes `renderReport(input)` to `file` atomically, so a viewer never sees half a report. */
export function writeReport(file: string, input: ReportInput): void {
  writeFileAtomic(file, renderReport(input));
}

/** Headline numbers: final train loss, best eval loss and metrics, steps, wall time, median throughput. */
export function summarizeMetrics(metrics: readonly MetricsRecord[]): SummaryItem[] {
  const items: SummaryItem[] = [];
  const lastLoss = metrics.filter((r) => r.loss !== undefined).at(-1);
  items.push({
    label: "Final train loss",
    value: lastLoss ? formatNumber(lastLoss.loss!) : "—",
    detail: lastLoss && `step ${lastLoss.step}`,
  });
  const evalKeys = keysOf(metrics).filter((k) => k.startsWith("eval_") && !k.includes("/"));
  for (const key of ["eval_loss", ...evalKeys.filter((k) => k !== "eval_loss")]) {
    const lower = lowerIsBetter(key);
    let best: MetricsRecord | undefined;
    for (const r of metrics) {
      const v = r[key];
      if (v === undefined || !Number.isFinite(v)) continue;
      if (!best || (lower ? v < best[key]! : v > best[key]!)) best = r;
    }
    if (key === "eval_loss" || best) {
      items.push({
        label: `Best ${key.replace(/^eval_/, "eval ")}`,
        value: best ? formatNumber(best[key]!) : "—",
        detail: best && `step ${best.step} (${lower ? "min" : "max"})`,
      });
    }
  }
  const steps = metrics.length ? Math.max(...metrics.map((r) => r.step)) : undefined;
  items.push({ label: "Steps", value: steps === undefined ? "—" : String(steps) });
  const elapsed = finiteValues(metrics, "elapsed_s");
  items.push({ label: "Wall time", value: elapsed.length ? formatDuration(Math.max(...elapsed)) : "—" });
  const throughput = finiteValues(metrics, "tokens_per_s");
  items.push({
    label: "Tokens/s (median)",
    value: throughput.length ? Math.round(median(throughput)).toLocaleString("en-US") : "—",
  });
  return items;
}

function chartSpecs(metrics: readonly MetricsRecord[]): ChartSpec[] {
  const keys = keysOf(metrics);
  const has = (key: string) => keys.includes(key);
  const series = (key: string, label: string, color: string, opts: { dashed?: boolean; markers?: boolean } = {}) => ({
    label,
    color,
    dashed: opts.dashed ?? false,
    markers: opts.markers ?? key.startsWith("eval_"),
    points: metrics.filter((r) => r[key] !== undefined).map((r): [number, number] => [r.step, r[key]!]),
  });
  const charts: ChartSpec[] = [];
  const chart = (title: string, list: ChartSpec["series"], scientific = false) => {
    if (list.length) charts.push({ title, scientific, series: list });
  };

  chart("Loss", [
    ...(has("loss") ? [series("loss", "train loss", PALETTE[0]!)] : []),
    ...(has("eval_loss") ? [series("eval_loss", "eval loss", PALETTE[1]!)] : []),
  ]);
  if (has("lr")) chart("Learning rate", [series("lr", "lr", PALETTE[2]!)], true);
  if (has("tokens_per_s")) chart("Throughput (tokens/s)", [series("tokens_per_s", "tokens/s", PALETTE[3]!)]);

  // Metrics split per task ("eval_accuracy/task_a") share one chart with their overall value.
  const groups = new Map<string, string[]>();
  for (const key of keys) {
    if (TRAIN_KEYS.has(key) || key === "eval_loss") continue;
    const base = key.split("/")[0]!;
    if (base === "loss" || base === "eval_loss") continue;
    groups.set(base, [...(groups.get(base) ?? []), key]);
  }
  const evalGroups = [...groups].filter(([base]) => base.startsWith("eval_"));
  const otherGroups = [...groups].filter(([base]) => !base.startsWith("eval_"));
  for (const [base, members] of evalGroups) {
    chart(base, members.map((key, i) => series(key, key === base ? base : key.slice(base.length + 1), PALETTE[i % PALETTE.length]!)));
  }

  // Per-task losses: one color per task, train solid and eval dashed.
  const tasks = [...new Set(keys.filter((k) => /^(eval_)?loss\/./.test(k)).map((k) => k.slice(k.indexOf("/") + 1)))];
  chart("Loss per task", tasks.flatMap((task, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    return [
      ...(has(`loss/${task}`) ? [series(`loss/${task}`, `${task} (train)`, color)] : []),
      ...(has(`eval_loss/${task}`) ? [series(`eval_loss/${task}`, `${task} (eval)`, color, { dashed: true })] : []),
    ];
  }));

  // Anything else a trainer logged (grad_norm, loss_scale, ...) is still worth seeing.
  for (const [base, members] of otherGroups) {
    chart(base, members.map((key, i) => series(key, key === base ? base : key.slice(base.length + 1), PALETTE[(i + 4) % PALETTE.length]!)));
  }
  return charts;
}

function renderTable(table: ReportTable): string {
  // Numbers are right-aligned to line up their digits; so is the header of an all-number column.
  const numeric = table.columns.map((_, i) =>
    table.rows.some((row) => typeof row[i] === "number") && table.rows.every((row) => row[i] == null || typeof row[i] === "number"));
  const head = table.columns.map((c, i) => `<th${numeric[i] ? ' class="num"' : ""}>${escapeHtml(c)}</th>`).join("");
  const body = table.rows
    .map((row) => `<tr>${row.map((cell) => typeof cell === "number"
      ? `<td class="num">${escapeHtml(formatNumber(cell))}</td>`
      : `<td>${cell === null ? "—" : escapeHtml(cell)}</td>`).join("")}</tr>`)
    .join("\n");
  return `<section class="card"><h3>${escapeHtml(table.title)}</h3><div class="table-box"><table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div></section>`;
}

// Every chart spans the run's full step range, so charts line up when compared by eye.
function stepRange(metrics: readonly MetricsRecord[]): [number, number] | null {
  return metrics.length ? [metrics[0]!.step, metrics.at(-1)!.step] : null;
}

function keysOf(metrics: readonly MetricsRecord[]): string[] {
  const keys = new Set<string>();
  for (const r of metrics) for (const k of Object.keys(r)) keys.add(k);
  return [...keys];
}

function finiteValues(metrics: readonly MetricsRecord[], key: string): number[] {
  return metrics.map((r) => r[key]).filter((v): v is number => v !== undefined && Number.isFinite(v));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function lowerIsBetter(key: string): boolean {
  return key.replace(/^eval_/, "").split(/[_/]/).some((part) => LOWER_IS_BETTER.has(part));
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON that can sit inside a <script> element: with every "<" escaped, no "</script" or "<!--" can end or
 * confuse the element, and JSON.parse still reads the same value. U+2028/2029 are escaped for old JS parsers.
 */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

let chartSource: string | undefined;

/** The Chart.js UMD bundle, ready to inline; read once per process. */
function chartLibrary(): string {
  if (chartSource === undefined) {
    // chart.js's "exports" map does not expose dist/chart.umd.js, so locate it beside the CommonJS entry point.
    const entry = createRequire(import.meta.url).resolve("chart.js");
    // "<\/script" means the same as "</script" in JS strings, regexes and comments but cannot close the element.
    chartSource = readFileSync(join(dirname(entry), "chart.umd.js"), "utf8").replace(/<\/(script)/gi, "<\\/$1");
  }
  return chartSource;
}

const STYLE = `
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 20px 48px}
header h1{margin:0;font-size:26px;font-weight:650}
.subtitle{margin:4px 0 0;color:#6b7280}
h2{font-size:17px;font-weight:600;margin:28px 0 12px}
h3{font-size:14px;font-weight:600;margin:0 0 8px;color:#374151}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:16px;box-shadow:0 1px 2px rgba(0,0,0,.04);margin-bottom:16px}
.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;margin-top:20px}
.stat{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:12px 14px}
.stat .label{font-size:12px;color:#6b7280;text-transform:uppercase;letter-spacing:.04em}
.stat .value{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums;margin-top:2px}
.stat .detail{font-size:12px;color:#6b7280}
.notes{margin-top:16px}.notes h2{margin:0 0 6px;font-size:15px}.notes ul{margin:0;padding-left:20px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
.charts .card{margin:0}
.canvas-box{position:relative;height:260px}
.table-box{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e5e7eb}
th{font-weight:600;color:#374151;background:#f9fafb}
th.num,td.num{text-align:right}
pre.config{margin:0;font:12.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word}
.empty{color:#6b7280;margin:0}
`;

// Runs in the page: builds one Chart.js line chart per spec from the embedded JSON.
const CHART_SCRIPT = `
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  function fmt(v, scientific, digits) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (scientific || a < 1e-3 || a >= 1e6) return v.toExponential(digits || 1);
    return String(Number(v.toPrecision(4)));
  }
  // Exponent tick labels get just enough digits to tell neighbours apart (a nearly constant lr).
  function scientificTick(v, index, ticks) {
    for (var digits = 1; digits < 6; digits++) {
      var labels = ticks.map(function (t) { return fmt(t.value, true, digits); });
      if (new Set(labels).size === labels.length) break;
    }
    return fmt(v, true, digits);
  }
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#4b5563";
  Chart.defaults.animation = false;
  data.charts.forEach(function (spec, i) {
    new Chart(document.getElementById("chart-" + i), {
      type: "line",
      data: {
        datasets: spec.series.map(function (s) {
          return {
            label: s.label,
            data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
            borderColor: s.color,
            backgroundColor: s.color,
            borderWidth: 1.5,
            borderDash: s.dashed ? [6, 4] : [],
            pointRadius: s.markers ? 2.5 : 0,
            // Chart.js paints lower orders on top: keep sparse eval series visible over dense train curves.
            order: s.markers ? 0 : 1,
            pointHoverRadius: 4,
            tension: 0
          };
        })
      },
      options: {
        parsing: false,
        normalized: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: {
            type: "linear",
            min: data.steps[0],
            max: data.steps[1],
            title: { display: true, text: "step" },
            ticks: { precision: 0 }
          },
          y: spec.scientific ? { ticks: { callback: scientificTick } } : {}
        },
        plugins: {
          // Long runs: thin each series to a few points per pixel column, keeping min and max so spikes stay visible.
          decimation: { enabled: true, algorithm: "min-max" },
          legend: {
            display: spec.series.length > 1,
            labels: { boxWidth: 12, boxHeight: 2, sort: function (a, b) { return a.datasetIndex - b.datasetIndex; } }
          },
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmt(c.parsed.y, spec.scientific); } } }
        }
      }
    });
  });
  // Chart.js has no error bars: each bar is a two-point line dataset, kept out of legend and tooltips.
  data.scatters.forEach(function (spec, i) {
    var datasets = [];
    spec.series.forEach(function (s) {
      datasets.push({ label: s.label, data: s.points.map(function (p) { return { x: p.x, y: p.y }; }),
        backgroundColor: s.color, borderColor: s.color, pointRadius: 6, pointHoverRadius: 7, order: 0 });
      if (s.samples && s.samples.length) {
        datasets.push({ label: s.label + " (one run)", data: s.samples.map(function (p) { return { x: p[0], y: p[1] }; }),
          backgroundColor: s.color + "55", borderColor: s.color, borderWidth: 1, pointRadius: 3.5, order: 1, auxiliary: true, inTooltip: true });
      }
      s.points.forEach(function (p) {
        [[p.xRange, function (v) { return { x: v, y: p.y }; }], [p.yRange, function (v) { return { x: p.x, y: v }; }]].forEach(function (bar) {
          if (bar[0]) datasets.push({ data: bar[0].map(bar[1]), showLine: true, borderColor: s.color, borderWidth: 1.5, pointRadius: 0, pointHitRadius: 0, order: 2, auxiliary: true });
        });
      });
    });
    new Chart(document.getElementById("scatter-" + i), {
      type: "scatter",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false,
        scales: { x: { title: { display: true, text: spec.xLabel } }, y: { title: { display: true, text: spec.yLabel } } },
        plugins: {
          legend: { labels: { boxWidth: 10, filter: function (item, chart) { return !chart.datasets[item.datasetIndex].auxiliary; } } },
          tooltip: {
            filter: function (c) { return !c.dataset.auxiliary || c.dataset.inTooltip; },
            callbacks: { label: function (c) { return c.dataset.label + ": (" + fmt(c.parsed.x) + ", " + fmt(c.parsed.y) + ")"; } }
          }
        }
      }
    });
  });
})();
`;
