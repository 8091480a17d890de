/** How many of the latest durations a summary is computed over. A power of two. */
export const WINDOW_SIZE = 1024;

/** Durations in milliseconds: how many were recorded in all, and p50 / p99 / max of the latest {@link WINDOW_SIZE}. */
export interface DurationSummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** A ring of the latest durations (`size`, a power of two): recording is one store, summarising sorts a copy. */
export class DurationWindow {
  private readonly samples: Float64Array;
  private count = 0;

  constructor(private readonly size: number = WINDOW_SIZE) {
    this.samples = new Float64Array(size);
  }

  record(ms: number): void {
    this.samples[this.count & (this.size - 1)] = ms;
    this.count += 1;
  }

  summary(): DurationSummary {
    const n = Math.min(this.count, this.size);
    if (n === 0) return { count: 0, p50: 0, p99: 0, max: 0 };
    const sorted = this.samples.slice(0, n).sort();
    // Nearest rank.
    const rank = (q: number) => sorted[Math.min(n - 1, Math.ceil(q * n) - 1)];
    return { count: this.count, p50: round(rank(0.5)), p99: round(rank(0.99)), max: round(sorted[n - 1]) };
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
