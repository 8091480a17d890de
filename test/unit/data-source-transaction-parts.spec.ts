import { EventEmitter } from 'node:events';
import { ConnectionHold } from '../../lib/core/connection-hold';
import { ConnectionLossWatch } from '../../lib/core/connection-loss';
import type { DataSourceEntry } from '../../lib/core/data-source-registry';
import type { Dialect, FailureScope } from '../../lib/core/dialect';
import { DataSourceCounters } from '../../lib/core/stats';
import { StatementAccounting } from '../../lib/core/statement-accounting';
import { AbortState } from '../../lib/core/transaction-abort';
import { ConnectionAcquisitionError, TransactionAbortedError } from '../../lib/errors';

// The parts a data-source transaction is made of, each on its own: no pool, no QueryRunner.

describe('statement accounting', () => {
  it('counts statements begun and in flight, and resolves drained() when the last one ends', async () => {
    const statements = new StatementAccounting(false);
    statements.begin();
    statements.begin();
    expect({ count: statements.count, inFlight: statements.inFlight }).toEqual({ count: 2, inFlight: 2 });

    let drained = false;
    const waiting = statements.drained().then(() => (drained = true));
    statements.end();
    await Promise.resolve();
    expect(drained).toBe(false);
    statements.end();
    await waiting;
    expect({ count: statements.count, inFlight: statements.inFlight, drained }).toEqual({ count: 2, inFlight: 0, drained: true });
  });

  it('measures no busy time unless timed, and counts BEGIN time added by hand when timed', () => {
    const untimed = new StatementAccounting(false);
    untimed.begin();
    untimed.end();
    expect(untimed.busyMsAt(performance.now())).toBe(0);

    const timed = new StatementAccounting(true);
    timed.addBusy(7);
    expect(timed.busyMsAt(performance.now())).toBe(7);
  });
});

describe('the abort state of a data-source transaction', () => {
  function dialectAnswering(scope: FailureScope): Dialect {
    return {
      name: 'postgres',
      afterFailure: () => Promise.resolve(scope),
      isRetryable: (error: unknown) => (error as { code?: string }).code === '40P01',
    } as unknown as Dialect;
  }
  const failure = Object.assign(new Error('duplicate key'), { code: '23505' });

  it('stays clear when the database undid the statement alone', async () => {
    const abort = new AbortState(dialectAnswering('statement'), 1);
    await abort.noteFailure({}, failure, { transactionDepth: 1 });
    expect(abort.current).toBeUndefined();
    expect(abort.within(1)).toBe(false);
  });

  it('marks the savepoint a failure ran in, until a ROLLBACK TO that savepoint clears it', async () => {
    const abort = new AbortState(dialectAnswering('level'), 1);
    // A statement in the savepoint opened at depth 1 (TypeORM's depth is 2 inside it).
    await abort.noteFailure({}, failure, { transactionDepth: 2 });
    expect({ savepoint: abort.within(1), transaction: abort.within(2), ended: abort.ended }).toEqual({
      savepoint: true,
      transaction: false,
      ended: false,
    });
    abort.rolledBackTo(1);
    expect(abort.current).toBeUndefined();
  });

  it('marks the whole transaction ended when the server rolled it back, and names the first failure in its error', async () => {
    const abort = new AbortState(dialectAnswering('transaction'), 1);
    await abort.noteFailure({}, failure, { transactionDepth: 2 });
    await abort.noteFailure({}, new Error('a later failure'), { transactionDepth: 2 });
    expect({ ended: abort.ended, within: abort.within(5) }).toEqual({ ended: true, within: true });
    abort.rolledBackTo(1);
    expect(abort.ended).toBe(true);

    const error = abort.error('a query', 'POST /transfers');
    expect(error).toBeInstanceOf(TransactionAbortedError);
    expect(error.cause).toBe(failure);
    expect(error.message).toMatch(
      /^a query in the transaction of POST \/transfers was refused.*duplicate key.*rolled the whole transaction back/,
    );
  });

  it('marks the transaction aborted when a savepoint could not be undone', () => {
    const abort = new AbortState(dialectAnswering('statement'), 1);
    abort.undoFailed(new Error('ROLLBACK TO failed'));
    expect({ whole: abort.within(1), ended: abort.ended }).toEqual({ whole: false, ended: false });
    expect(abort.within(0)).toBe(true);
  });
});

describe('the connection-loss watch', () => {
  it('notes the end of the connection it watches, and wakes a waiter', async () => {
    const connection = new EventEmitter();
    const watch = new ConnectionLossWatch();
    watch.watch(connection);
    const woken = watch.whenLost();
    connection.emit('end');
    await woken;
    expect(watch.lost).toBeInstanceOf(Error);
  });

  it('reports to whichever transaction holds the connection now, with one listener per event for its life', () => {
    const connection = new EventEmitter();
    const first = new ConnectionLossWatch();
    const second = new ConnectionLossWatch();
    first.watch(connection);
    first.unwatch();
    second.watch(connection);
    const cause = new Error('terminating connection due to administrator command');
    connection.emit('error', cause);
    expect({ first: first.lost, second: second.lost }).toEqual({ first: undefined, second: cause });
    expect({ end: connection.listenerCount('end'), error: connection.listenerCount('error') }).toEqual({ end: 1, error: 1 });
  });
});

describe('the connection hold', () => {
  function entry(): DataSourceEntry {
    return {
      name: 'default',
      counters: new DataSourceCounters(),
      dialect: { poolStats: () => ({ total: 1, idle: 0, waiting: 0, max: 1 }) },
    } as unknown as DataSourceEntry;
  }

  it("is 'acquiring' only inside the driver's synchronous acquisition, 'taking' until it answers, then 'held' until cleared", async () => {
    const hold = new ConnectionHold(entry());
    const seen: unknown[] = [];
    let grant!: (connection: unknown) => void;
    const taking = hold.take(() => {
      seen.push({ acquiring: hold.acquiring, state: hold.state });
      return new Promise((resolve) => (grant = resolve));
    }, 'POST /transfers');
    seen.push({ acquiring: hold.acquiring, state: hold.state });
    grant('the connection');
    await expect(taking).resolves.toBe('the connection');
    seen.push({ acquiring: hold.acquiring, state: hold.state });
    hold.clear();
    seen.push({ acquiring: hold.acquiring, state: hold.state });
    expect(seen).toEqual([
      { acquiring: true, state: 'none' },
      { acquiring: false, state: 'taking' },
      { acquiring: false, state: 'held' },
      { acquiring: false, state: 'none' },
    ]);
  });

  it('counts connections held, and turns a failed acquisition into ConnectionAcquisitionError', async () => {
    const source = entry();
    const hold = new ConnectionHold(source);
    await hold.take(() => Promise.resolve('c1'), 'POST /transfers');
    expect(source.counters.connectionsHeld).toBe(1);

    const other = new ConnectionHold(source);
    const failed = other.take(() => Promise.reject(new Error('timeout exceeded when trying to connect')), 'POST /transfers');
    await expect(failed).rejects.toBeInstanceOf(ConnectionAcquisitionError);
    await expect(failed).rejects.toThrow(
      /POST \/transfers got no connection of data source 'default'.*Every connection stayed in use/,
    );
    expect({ held: source.counters.connectionsHeld, failures: source.counters.acquisitionFailures, state: other.state }).toEqual({
      held: 1,
      failures: 1,
      state: 'none',
    });
    hold.clear();
    expect(source.counters.connectionsHeld).toBe(0);
  });
});
