import { Logger } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import type { DataSourceRegistry } from './data-source-registry';

/** A gap longer than `idleInTransactionMs` in which a unit of work held its connection and ran no statement. */
export interface IdleGap {
  /** The unit of work: `POST /register`, or the runner's name. */
  readonly unit: string;
  /** The data source whose connection sat idle. */
  readonly dataSource: string;
  /** How long it sat idle, in ms (rounded). */
  readonly idleMs: number;
  /** The threshold it went over. */
  readonly thresholdMs: number;
  /** Where the statement before the gap was made (first application frame). */
  readonly before: string;
  /** Where the statement after the gap was made, or `the end of the unit of work (COMMIT)` when none followed. */
  readonly after: string;
  /** True when no statement followed: the gap ran to the end of the unit of work. */
  readonly atEnd: boolean;
}

type Listener = (gap: IdleGap) => void;

const logger = new Logger('TransactionalModule');
/** Per data source, who wants to hear of its gaps: `ConnectionAudit`. */
const listeners = new WeakMap<DataSource, Set<Listener>>();
/** Per application, the pairs of call sites already logged: each pair is logged once, counted every time. */
const logged = new WeakMap<DataSourceRegistry, Set<string>>();

/** Calls `listener` with every gap reported on `dataSource`'s connections; returns the function that stops it. */
export function onIdleGap(dataSource: DataSource, listener: Listener): () => void {
  let set = listeners.get(dataSource);
  if (set === undefined) listeners.set(dataSource, (set = new Set()));
  set.add(listener);
  return () => set.delete(listener);
}

/** Counts the gap, tells the listeners, and logs it the first time its pair of call sites shows up. */
export function reportIdleGap(gap: IdleGap, registry: DataSourceRegistry, dataSource: DataSource): void {
  registry.counters.idleInTransactionGaps += 1;
  const heard = listeners.get(dataSource);
  if (heard !== undefined) for (const listener of heard) listener(gap);
  let pairs = logged.get(registry);
  if (pairs === undefined) logged.set(registry, (pairs = new Set()));
  const pair = `${gap.unit}\n${gap.before}\n${gap.after}`;
  if (pairs.has(pair)) return;
  pairs.add(pair);
  logger.warn(describeIdleGap(gap));
}

/** The warning: where the connection sat idle, why that matters, and what to do about it. */
export function describeIdleGap(gap: IdleGap): string {
  const between = gap.atEnd
    ? `between the statement at ${gap.before} and ${gap.after}`
    : `between the statement at ${gap.before} and the statement at ${gap.after}`;
  return (
    `${gap.unit} held its connection of data source '${gap.dataSource}' idle in transaction for ${gap.idleMs} ms, ` +
    `longer than idleInTransactionMs (${gap.thresholdMs} ms), ${between}. Meanwhile no other request could use that ` +
    `connection: when the code in between waits on a mail server or an HTTP service that is slow or never answers, ` +
    `the requests hold every pooled connection and the application stops answering. Move that work out of the ` +
    `transaction: before the first query (no connection is held until then; if the work fails, the request fails ` +
    `before anything is written), or after the commit with TransactionHost.afterCommit() (it then runs only for ` +
    `committed work, and its failure no longer fails the request: log and retry it, or write an outbox row in the ` +
    `transaction and send from that). Where holding the connection is intended, set idleInTransactionMs: false on ` +
    `that route (@Transactional()) or run().`
  );
}
