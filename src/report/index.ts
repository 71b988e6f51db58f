export { METRICS_FILE, MetricsFormatError, MetricsLog, readMetrics, truncateMetricsAfter, type MetricsRecord } from "./metrics.ts";
export { renderReport, summarizeMetrics, writeReport, type ReportInput, type ReportTable, type ScatterChart, type ScatterSeries, type SummaryItem } from "./html.ts";
export { TrainingProgress, type ProgressOptions, type ProgressUpdate } from "./progress.ts";
