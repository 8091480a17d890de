import { Logger } from '@nestjs/common';
import type { DataSourceTransaction } from './data-source-transaction';

const logger = new Logger('TransactionalModule');

/**
 * The `slowTransactionMs` warning of one data-source transaction: once, while it still holds its
 * connection, saying how the time went (statements in the database, or idling in transaction between them).
 */
export class SlowTransactionMonitor {
  private timer?: NodeJS.Timeout;

  constructor(readonly ms: number) {}

  /** The connection was taken: the clock runs. */
  start(transaction: DataSourceTransaction): void {
    this.timer = setTimeout(report, this.ms, transaction, this.ms);
    this.timer.unref();
  }

  /** The connection was released (or discarded). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function report(transaction: DataSourceTransaction, slowMs: number): void {
  const acquiredAt = transaction.connectionHold.acquiredAt;
  if (acquiredAt === undefined) return;
  const now = performance.now();
  const heldMs = now - acquiredAt;
  const { statements, unitOfWork, entry } = transaction;
  const running = statements.inFlight > 0;
  const dbMs = statements.busyMsAt(now);
  const idleMs = Math.max(0, heldMs - dbMs);
  unitOfWork.registry.counters.slowTransactions += 1;
  const site = transaction.connectionHold.capturedSite();
  logger.warn(
    `${unitOfWork.label} has held a connection of data source '${entry.name}' for ${Math.round(heldMs)} ms, ` +
      `longer than slowTransactionMs (${slowMs} ms)${site ? `; it took it at ${site}` : ''}. ` +
      `${Math.round(dbMs)} ms went to ${statements.count} statement(s) in the database${running ? ' (one is running now)' : ''}, ` +
      `${Math.round(idleMs)} ms to idling in transaction between them. ` +
      (idleMs >= dbMs
        ? `Idle in transaction means the connection waited on application code (an HTTP call, a slow computation): ` +
          `do that work before the first query, or after the response in an afterCommit hook.`
        : `Most of it went to the database: a slow statement, or one waiting for a lock another transaction holds.`) +
      transaction.clock.describeRoute(),
  );
}
