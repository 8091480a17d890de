import { Logger } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { callSite, captureStack } from '../core/call-site';
import type { DataSourceEntry, DataSourceRegistry } from '../core/data-source-registry';
import type { DataSourceTransaction } from '../core/data-source-transaction';
import type { UnitOfWork } from '../core/unit-of-work';
import { NestedConnectionError } from '../errors';

const logger = new Logger('TransactionalModule');

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
export function heldDuring(unitOfWork: UnitOfWork, dataSource: DataSource): DataSourceTransaction | undefined {
  if (unitOfWork.state !== 'open') return undefined;
  let other: DataSourceTransaction | undefined;
  for (const transaction of unitOfWork.opened()) {
    const hold = transaction.connectionHold;
    if (transaction.entry.dataSource === dataSource) {
      // Its own QueryRunner asking for its connection: the one connection it may take on this pool.
      if (hold.acquiring) return undefined;
      if (hold.state !== 'none') return transaction;
    } else if (other === undefined && hold.state !== 'none') {
      other = transaction;
    }
  }
  // Held on another pool, asked for on this one (its own first connection here returned above).
  return other;
}

/** Whether an acquisition from `dataSource`'s pool, made now, is `unitOfWork`'s own QueryRunner taking its connection. */
export function isOwnAcquisition(unitOfWork: UnitOfWork, dataSource: DataSource): boolean {
  for (const transaction of unitOfWork.opened()) {
    if (transaction.entry.dataSource === dataSource && transaction.connectionHold.acquiring) return true;
  }
  return false;
}

/**
 * Counts and reports one violation, an acquisition from `entry`'s pool while `holder` holds (or takes)
 * a connection; `repository` names the repository method that made it, if one did. Returns the error
 * to throw in `'throw'` mode; in `'warn'` mode logs each call site once.
 */
export function violation(
  entry: DataSourceEntry,
  registry: DataSourceRegistry,
  unitOfWork: UnitOfWork,
  holder: DataSourceTransaction,
  repository: { entity: string; method: string } | undefined,
): NestedConnectionError | undefined {
  const mode = unitOfWork.guardMode(entry);
  if (mode === 'off') return undefined;
  registry.counters.guardViolations += 1;
  const site = callSite(captureStack());
  const what = repository
    ? `Repository<${repository.entity}>.${repository.method}() was called`
    : `A second connection was requested from the pool of data source '${entry.name}'`;
  const fix = repository
    ? `Use the repository from @InjectTxRepository(${repository.entity}), tx.getRepository(${repository.entity}) or ` +
      `tx.withRepository(repository) with the manager from @Tx().`
    : `Run the query through the unit of work's manager (@Tx(), TransactionHost.manager() or an @InjectTxRepository() ` +
      `repository) instead of the data source, its manager or a new query runner; use tx.transaction() for a nested ` +
      `transaction (a savepoint on the same connection); finish reading one query's rows before starting the next.`;
  const message = `${what} during the transaction of ${unitOfWork.label}${site ? ` (at ${site})` : ''}. ${holdAndWait(entry, holder)} ${fix}`;
  if (mode === 'throw') return new NestedConnectionError(message);
  const key = site ?? message;
  if (!registry.reportedSites.has(key)) {
    registry.reportedSites.add(key);
    logger.warn(message);
  }
  return undefined;
}

/** Why the acquisition is refused: what the unit of work holds, on which data source, since where. */
function holdAndWait(entry: DataSourceEntry, holder: DataSourceTransaction): string {
  const same = holder.entry === entry;
  const of = same ? '' : ` of data source '${holder.entry.name}'`;
  const taken = holder.connectionHold.site();
  const holds =
    holder.connectionHold.state === 'held'
      ? `holds one${of}${taken ? ` (taken at ${taken})` : ''}`
      : `is taking one${of} (a query of it is waiting for the pool at the same time)`;
  const second = same ? 'a second pooled connection' : `a connection of data source '${entry.name}'`;
  return `It would take ${second} while this unit of work ${holds}, which deadlocks the pool${same ? '' : 's'} under load.`;
}
