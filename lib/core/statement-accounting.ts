import type { ConnectionClock } from './connection-clock';

/**
 * The statements of one data-source transaction, counted where each begins and ends: how many ran,
 * how many are in flight now, and (when timed) how long the connection was busy with them. Every
 * statement sent through the unit of work's runner, and every savepoint statement, passes through
 * `begin()` and `end()` here, once each; BEGIN is added with `addBusy()`.
 */
export class StatementAccounting {
  /** Statements begun so far. */
  count = 0;
  /** Statements begun and not yet answered. */
  inFlight = 0;
  private busyMs = 0;
  private busySince = 0;
  private onDrained?: () => void;

  /**
   * `timed`: measure busy time too (it costs a clock read per statement; the slow-transaction report needs it).
   * `clock`: the per-route hold times and idle-in-transaction gaps (connection-clock.ts), told of each statement.
   */
  constructor(
    readonly timed: boolean,
    private readonly clock?: ConnectionClock,
  ) {}

  begin(): void {
    this.count += 1;
    const first = this.inFlight++ === 0;
    if (first && this.timed) this.busySince = performance.now();
    this.clock?.begin(first);
  }

  end(): void {
    const last = --this.inFlight === 0;
    // Called where the statement's await returned: the clock captures its call site here.
    this.clock?.end(last);
    if (last) {
      if (this.timed) this.busyMs += performance.now() - this.busySince;
      this.onDrained?.();
    }
  }

  /** Time the connection was busy outside `begin()`/`end()` (the BEGIN statements). */
  addBusy(ms: number): void {
    this.busyMs += ms;
  }

  /** Resolves once no statement is in flight; call it only while one is. */
  drained(): Promise<void> {
    return new Promise((resolve) => (this.onDrained = resolve));
  }

  /** How long statements were in flight up to `now`, the running one included. */
  busyMsAt(now: number): number {
    return this.busyMs + (this.inFlight > 0 ? now - this.busySince : 0);
  }
}
