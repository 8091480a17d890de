import type { DataSource } from 'typeorm';
import type { SourceTransaction, TransactionContext } from '../core/transaction-context';

/**
 * The guard's rule. A pool deadlocks when every connection belongs to a unit of work that holds it
 * while it waits for another one (the seeds' hold-and-wait). So an acquisition made inside an open
 * unit of work is a violation when, and only when, that unit of work holds a connection of any of its
 * data sources, or is taking one, and the acquisition is not that taking itself. One made while the
 * unit of work holds nothing waits for nothing of its own: it goes through.
 *
 * Returns the data source's transaction the unit of work would hold (or be taking) while it waits,
 * preferring the pool asked for; undefined when the acquisition goes through.
 */
export function heldDuring(ctx: TransactionContext, dataSource: DataSource): SourceTransaction | undefined {
  if (ctx.state !== 'open') return undefined;
  let other: SourceTransaction | undefined;
  for (const source of ctx.opened()) {
    if (source.entry.dataSource === dataSource) {
      // Its own QueryRunner asking for its connection: the one connection it may take on this pool.
      if (source.acquiring) return undefined;
      if (source.hold !== 'none') return source;
    } else if (other === undefined && source.hold !== 'none') {
      other = source;
    }
  }
  // Held on another pool, asked for on this one (its own first connection here returned above).
  return other;
}

/** Whether an acquisition from `dataSource`'s pool, made now, is `ctx`'s own QueryRunner taking its connection. */
export function isOwnAcquisition(ctx: TransactionContext, dataSource: DataSource): boolean {
  for (const source of ctx.opened()) {
    if (source.entry.dataSource === dataSource && source.acquiring) return true;
  }
  return false;
}
