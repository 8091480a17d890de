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

  /** `timed`: measure busy time too (it costs a clock read per statement; the slow-transaction report needs it). */
  constructor(readonly timed: boolean) {}

  begin(): void {
    this.count += 1;
    if (this.inFlight++ === 0 && this.timed) this.busySince = performance.now();
  }

  end(): void {
    if (--this.inFlight === 0) {
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
