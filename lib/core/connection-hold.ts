import { ConnectionAcquisitionError } from '../errors';
import { callSite, captureStack, type StackHolder } from './call-site';
import type { DataSourceEntry } from './data-source-registry';

/** What a data-source transaction has of its pool: nothing, a connection it is waiting for, or one it holds. */
export type Hold = 'none' | 'taking' | 'held';

/**
 * What one data-source transaction holds of its pool, and since where: the state the connection guard
 * reads (lib/guard/hold-and-wait.ts decides from it), and the acquisition that changes it, timed and counted.
 */
export class ConnectionHold {
  /** True only while this transaction's own QueryRunner asks the pool for its connection. */
  acquiring = false;
  /** True from the pool's acquisition until it answered: the connection is being taken. */
  private waiting = false;
  /** `performance.now()` when the connection came from the pool; undefined when none is held. */
  acquiredAt?: number;
  /** Where the connection was taken (captured when the guard is on, or slowTransactionMs set). */
  private holder?: StackHolder;
  /** Where this route's first request took its connection, when this one captured none. */
  private routeSite?: string | null;

  constructor(private readonly entry: DataSourceEntry) {}

  get state(): Hold {
    if (this.acquiredAt !== undefined) return 'held';
    return this.waiting ? 'taking' : 'none';
  }

  /**
   * Takes the connection through `acquisition` (the QueryRunner's own connect), timed and counted; a
   * failure becomes `ConnectionAcquisitionError`, naming `label`.
   */
  async take(acquisition: () => Promise<unknown>, label: string): Promise<unknown> {
    const counters = this.entry.counters;
    const started = performance.now();
    let pending: Promise<unknown>;
    // The driver's acquisition runs synchronously inside connect(): the guard sees the flag.
    this.acquiring = true;
    try {
      pending = acquisition();
    } finally {
      this.acquiring = false;
    }
    this.waiting = true;
    let connection: unknown;
    try {
      connection = await pending;
    } catch (error) {
      counters.acquisitionFailures += 1;
      throw this.acquisitionError(label, error, performance.now() - started);
    } finally {
      this.waiting = false;
    }
    this.acquiredAt = performance.now();
    counters.acquisitionWait.record(this.acquiredAt - started);
    counters.connectionsHeld += 1;
    return connection;
  }

  /** The connection was released to the pool, or discarded: nothing is held now; counts how long it was. */
  clear(): void {
    if (this.acquiredAt === undefined) return;
    const counters = this.entry.counters;
    counters.held.record(performance.now() - this.acquiredAt);
    counters.connectionsHeld -= 1;
    this.acquiredAt = undefined;
  }

  /**
   * Notes where the connection was taken: captured now (`capture`, or without route `sites`), or the
   * site its route's first request captured.
   */
  noteSite(sites: Map<string, string | null> | undefined, capture: boolean): void {
    if (sites === undefined || capture) {
      this.holder = captureStack();
      return;
    }
    const known = sites.get(this.entry.name);
    if (known !== undefined) {
      this.routeSite = known;
      return;
    }
    this.holder = captureStack();
    sites.set(this.entry.name, callSite(this.holder) ?? null);
  }

  /** Where this transaction itself took the connection, if it captured it. */
  capturedSite(): string | undefined {
    return callSite(this.holder);
  }

  /** Where the connection was taken, for messages. */
  site(): string | undefined {
    if (this.holder !== undefined) return callSite(this.holder);
    return this.routeSite ? `${this.routeSite}, where this route's first request took it` : undefined;
  }

  private acquisitionError(label: string, cause: unknown, waitedMs: number): ConnectionAcquisitionError {
    const { name, dialect, dataSource } = this.entry;
    const pool = dialect.poolStats(dataSource);
    const reason = cause instanceof Error ? cause.message : String(cause);
    const held = this.entry.counters.connectionsHeld;
    // The pool's own message is the same for "every connection busy" and "new connections unanswered":
    // only a pool whose every connection is held by units of work is exhausted by them.
    const exhausted = pool.max > 0 && held >= pool.max;
    return new ConnectionAcquisitionError(
      `${label} got no connection of data source '${name}' after ${Math.round(waitedMs)} ms ` +
        `(pool: ${pool.total} of ${pool.max} open, ${pool.idle} idle, ${pool.waiting} waiting; ${held} held by units of work): ${reason}. ` +
        (exhausted
          ? `Every connection stayed in use by units of work for the whole acquisition timeout: find what holds them ` +
            `(TransactionHost.stats(), slowTransactionMs) or raise poolSize.`
          : `The database did not accept a new connection in time (unreachable, restarting, or out of connection ` +
            `slots), or connections are held outside units of work. Nothing was sent; the request can be retried ` +
            `once the database answers.`),
      { cause },
    );
  }
}
