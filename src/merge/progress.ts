// The merge progress line: tensors done, bytes read and throughput, ETA. On a terminal one line
// is redrawn in place; elsewhere (logs, CI) a line is printed every few seconds and at the end.
import { formatDuration } from "../report/format.ts";
import type { MergeProgress } from "./model-merge.ts";

export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function progressLine(p: MergeProgress): string {
  const rate = p.elapsedS > 0 ? p.bytesRead / p.elapsedS : 0;
  const eta = rate > 0 ? (p.bytesTotal - p.bytesRead) / rate : NaN;
  return `merge: ${p.tensorsDone}/${p.tensorsTotal} tensors | ${formatBytes(p.bytesRead)} of ${formatBytes(p.bytesTotal)} read | ` +
    `${formatBytes(rate)}/s | eta ${p.tensorsDone === p.tensorsTotal ? "0:00" : formatDuration(eta)}`;
}

/** A progress callback that draws on `stream` (default stdout). */
export function progressPrinter(options: { stream?: NodeJS.WritableStream & { isTTY?: boolean }; everyS?: number } = {}): (p: MergeProgress) => void {
  const stream = options.stream ?? process.stdout;
  const tty = Boolean(stream.isTTY);
  const every = options.everyS ?? 2;
  let lastPrinted = -Infinity;
  return (p) => {
    const done = p.tensorsDone === p.tensorsTotal;
    if (tty) {
      stream.write(`\r${progressLine(p)}\x1b[K${done ? "\n" : ""}`);
    } else if (done || p.elapsedS - lastPrinted >= every) {
      stream.write(`${progressLine(p)}\n`);
      lastPrinted = p.elapsedS;
    }
  };
}
