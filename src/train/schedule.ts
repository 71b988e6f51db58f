// Learning-rate schedules with warmup, as transformers' get_{constant,linear,cosine}_schedule_with_warmup
// compute them for an optimizer step index starting at 0.
export type ScheduleKind = "constant" | "linear" | "cosine";

export function learningRate(kind: ScheduleKind, peak: number, step: number, warmup: number, total: number): number {
  if (step < warmup) return (peak * step) / Math.max(1, warmup);
  if (kind === "constant") return peak;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (kind === "linear") return peak * Math.max(0, 1 - progress);
  return peak * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
