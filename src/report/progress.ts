import cliProgress from "cli-progress";
import { formatDuration } from "./format.ts";

export interface ProgressUpdate {
  step: number;
  loss?: number;
  lr?: number;
  tokensPerS?: number;
}

export interface ProgressOptions {
  /** Where to draw; default process.stdout. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Live bar or plain lines; default: whether `stream` is a terminal. */
  tty?: boolean;
  /** Plain-line mode prints one line each time the step passes a multiple of this; default 10. */
  logEvery?: number;
  /** Milliseconds clock for the ETA; injectable so tests are deterministic. */
  now?: () => number;
}

/**
 * Training progress: a live cli-progress bar (step/total, loss, lr, tokens/s, ETA) on a terminal, and on
 * anything else (CI, redirected logs) a plain line every `logEvery` steps, since redraw escapes only
 * clutter a log file.
 */
export class TrainingProgress {
  private readonly stream: NodeJS.WritableStream;
  private readonly tty: boolean;
  private readonly logEvery: number;
  private readonly now: () => number;
  private run: { total: number; startStep: number; startedAt: number } | null = null;
  private bars: { multi: cliProgress.MultiBar; bar: cliProgress.SingleBar } | null = null;
  private last: ProgressUpdate | null = null;
  private lastPrintedStep = -1;

  constructor(options: ProgressOptions = {}) {
    this.stream = options.stream ?? process.stdout;
    this.tty = options.tty ?? options.stream?.isTTY ?? process.stdout.isTTY ?? false;
    this.logEvery = options.logEvery ?? 10;
    if (!Number.isInteger(this.logEvery) || this.logEvery < 1) throw new RangeError(`logEvery must be a positive integer, got ${this.logEvery}`);
    this.now = options.now ?? Date.now;
  }

  /** Begins tracking a run of `totalSteps`; `startStep` > 0 when resuming, so the ETA counts only new steps. */
  start(totalSteps: number, startStep = 0): void {
    if (this.run) this.stop();
    this.run = { total: totalSteps, startStep, startedAt: this.now() };
    this.last = null;
    this.lastPrintedStep = startStep;
    if (!this.tty) return;
    const multi = new cliProgress.MultiBar(
      {
        stream: this.stream,
        format: "{bar} {value}/{total} | loss {loss} | lr {lr} | {tps} tok/s | eta {remaining}",
        // Leave room for the ~58 characters of numbers so the line fits the terminal instead of being cut off.
        barsize: Math.max(10, Math.min(40, ((this.stream as { columns?: number }).columns || 80) - 58)),
      },
      cliProgress.Presets.shades_classic,
    );
    this.bars = { multi, bar: multi.create(totalSteps, startStep, this.fields()) };
  }

  update(update: ProgressUpdate): void {
    if (!this.run) throw new Error("TrainingProgress.update before start");
    this.last = update;
    if (this.bars) {
      this.bars.bar.update(update.step, this.fields());
    } else if (update.step === this.run.total || Math.floor(update.step / this.logEvery) > Math.floor(this.lastPrintedStep / this.logEvery)) {
      this.printLine();
    }
  }

  /** Prints a message on its own line; on a terminal it goes above the bar, which is redrawn below it. */
  log(message: string): void {
    if (this.bars) {
      this.bars.multi.log(message + "\n");
      // MultiBar prints buffered messages on its next redraw; redraw now so the message is never lost or late.
      this.bars.multi.update();
    } else {
      this.stream.write(message + "\n");
    }
  }

  /** Ends the bar (leaving its final state visible), or prints the last step if no plain line showed it yet. */
  stop(): void {
    if (this.bars) {
      this.bars.multi.stop();
      this.bars = null;
    } else if (this.last && this.last.step !== this.lastPrintedStep) {
      this.printLine();
    }
    this.run = null;
  }

  private printLine(): void {
    const { total } = this.run!;
    const f = this.fields();
    const parts = [`step ${this.last!.step}/${total}`];
    if (f.loss !== "-") parts.push(`loss ${f.loss}`);
    if (f.lr !== "-") parts.push(`lr ${f.lr}`);
    if (f.tps !== "-") parts.push(`${f.tps} tok/s`);
    parts.push(`eta ${f.remaining}`);
    this.stream.write(parts.join(" ") + "\n");
    this.lastPrintedStep = this.last!.step;
  }

  /** The bar's payload, also used for the plain line: each value formatted, "-" while unknown. */
  private fields(): { loss: string; lr: string; tps: string; remaining: string } {
    const u = this.last;
    return {
      loss: u?.loss === undefined ? "-" : u.loss.toFixed(3),
      lr: u?.lr === undefined ? "-" : u.lr.toExponential(1),
      tps: u?.tokensPerS === undefined ? "-" : String(Math.round(u.tokensPerS)),
      remaining: this.eta(),
    };
  }

  private eta(): string {
    const { total, startStep, startedAt } = this.run!;
    const done = (this.last?.step ?? startStep) - startStep;
    if (done <= 0) return "-";
    const elapsed = (this.now() - startedAt) / 1000;
    return formatDuration((elapsed / done) * Math.max(0, total - this.last!.step));
  }
}
