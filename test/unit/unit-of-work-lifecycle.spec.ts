import type { EntityManager } from 'typeorm';
import { currentUnitOfWork } from '../../lib/core/current-unit-of-work';
import { UnitOfWork } from '../../lib/core/unit-of-work';
import type { UnitOfWorkOwner } from '../../lib/core/unit-of-work-owner';
import {
  OpenStreamError,
  PartialCommitError,
  TransactionalError,
  TransactionFinishedError,
  TransactionTimeoutError,
} from '../../lib/errors';
import { waitFor } from '../support/wait-for';
import { databaseError, fakeApp, type FakeApp } from '../support/fake-data-source';

// The lifecycle of one unit of work, driven directly (open → use → settle → hooks), against a
// recording fake pool: the exact statements, the connections released or discarded, the hooks.

const owner: UnitOfWorkOwner = { describe: () => 'the test unit', attempt: () => undefined };

function openUnit(app: FakeApp): { unit: UnitOfWork; tx: EntityManager } {
  const unit = new UnitOfWork(app.registry, {}, owner);
  return { unit, tx: unit.manager('default', 'the test') };
}

/** A statement answer the test releases by hand: the statement stays in flight until then. */
function heldAnswer(): { promise: Promise<unknown>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<unknown>((done) => (resolve = () => done({ command: 'OK', rows: [] })));
  return { promise, resolve };
}

describe('settling a unit of work', () => {
  it('settles once: a second call, even one asking to roll back, gets the first outcome and sends nothing', async () => {
    const app = fakeApp();
    const { unit, tx } = openUnit(app);
    await tx.query('INSERT 1');

    const outcomes = await Promise.all([unit.settle(true), unit.settle(false), unit.settle(true)]);

    expect(outcomes).toEqual(['committed', 'committed', 'committed']);
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1', 'COMMIT']);
    expect({ acquired: app.pool.acquired, released: app.pool.released }).toEqual({ acquired: 1, released: 1 });
    expect(unit.state).toBe('committed');
    expect(app.host.stats()).toMatchObject({ openUnitsOfWork: 0, commits: 1, rollbacks: 0 });
  });

  it('refuses its manager and its runner after it settled, sending nothing', async () => {
    const app = fakeApp();
    const { unit, tx } = openUnit(app);
    await tx.query('INSERT 1');
    await unit.settle(false);

    expect(() => unit.manager('default', '@Tx()')).toThrow(TransactionFinishedError);
    await expect(tx.query('INSERT 2')).rejects.toThrow(/already rolled back when a query ran/);
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1', 'ROLLBACK']);
  });

  it('waits for a statement in flight before it sends COMMIT', async () => {
    const app = fakeApp();
    const slow = heldAnswer();
    app.pool.respond = (sql) => (sql === 'SLOW' ? slow.promise : { command: 'OK', rows: [] });
    const { unit, tx } = openUnit(app);
    const statement = tx.query('SLOW');
    const settled = unit.settle(true);
    let done = false;
    void settled.then(() => (done = true));
    await waitFor(() => app.pool.statements().includes('SLOW'));

    expect(app.pool.statements()).toEqual(['BEGIN', 'SLOW']);
    expect(done).toBe(false);
    slow.resolve();
    await expect(settled).resolves.toBe('committed');
    await statement;
    expect(app.pool.statements()).toEqual(['BEGIN', 'SLOW', 'COMMIT']);
  });

  it('commits data sources in the order of their first statement', async () => {
    const app = fakeApp('postgres', ['default', 'reports']);
    const unit = new UnitOfWork(app.registry, {}, owner);
    const main = unit.manager('default', 'the test');
    const reports = unit.manager('reports', 'the test');
    await reports.query('R1');
    await main.query('M1');
    const order: string[] = [];
    app.pools.default.respond = app.pools.reports.respond = (sql, connection) => {
      if (sql === 'COMMIT') order.push(connection === app.pools.default.connection ? 'default' : 'reports');
      return { command: 'OK', rows: [] };
    };

    await unit.settle(true);
    expect(order).toEqual(['reports', 'default']);
  });

  it('reports a partial commit when a later data source fails its COMMIT, and rolls that one back', async () => {
    const app = fakeApp('postgres', ['default', 'reports']);
    app.pools.reports.respond = (sql) => {
      if (sql === 'COMMIT') throw databaseError('deferred constraint violated', { code: '23503' });
      return { command: 'OK', rows: [] };
    };
    const unit = new UnitOfWork(app.registry, {}, owner);
    await unit.manager('default', 'the test').query('M1');
    await unit.manager('reports', 'the test').query('R1');

    const error: unknown = await unit.settle(true).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PartialCommitError);
    expect(error).toMatchObject({ committed: ['default'], failed: 'reports' });
    expect(app.pools.default.statements()).toEqual(['BEGIN', 'M1', 'COMMIT']);
    expect(app.pools.reports.statements()).toEqual(['BEGIN', 'R1', 'COMMIT', 'ROLLBACK']);
    expect(unit.state).toBe('rolledBack');
  });
});

describe('the errors of a settled unit of work', () => {
  it('turns a statement the database stopped for its timeout into TransactionTimeoutError, after the ROLLBACK', async () => {
    const app = fakeApp();
    const timeout = databaseError('canceling statement due to statement timeout', { code: '57014' });
    app.pool.respond = (sql) => {
      if (sql === 'SLOW') throw timeout;
      return { command: 'OK', rows: [] };
    };
    const run = app.runner.run((tx) => tx.query('SLOW'), { timeoutMs: 50 });
    await expect(run).rejects.toBeInstanceOf(TransactionTimeoutError);
    await expect(run).rejects.toMatchObject({ cause: { driverError: timeout } });
    expect(app.pool.statements()).toEqual([
      'BEGIN; SET LOCAL statement_timeout = 50; SET LOCAL idle_in_transaction_session_timeout = 50',
      'SLOW',
      'ROLLBACK',
    ]);
  });
});

describe('the hooks of a unit of work', () => {
  it('run after COMMIT and the release of the connection, outside the unit of work, in registration order', async () => {
    const app = fakeApp();
    const seen: Array<{ hook: string; statements: string[]; released: number; inside: boolean }> = [];
    const record = (hook: string) => () =>
      seen.push({
        hook,
        statements: app.pool.statements(),
        released: app.pool.released,
        inside: currentUnitOfWork() !== undefined,
      });
    await app.runner.run(async (tx) => {
      app.host.afterCommit(record('first'));
      app.host.afterRollback(record('never'));
      await tx.query('INSERT 1');
      app.host.afterCommit(record('second'));
    });

    const after = { statements: ['BEGIN', 'INSERT 1', 'COMMIT'], released: 1, inside: false };
    expect(seen).toEqual([
      { hook: 'first', ...after },
      { hook: 'second', ...after },
    ]);
  });

  it('run outside the unit of work even when it is settled from inside it: a hook can start a fresh one', async () => {
    const app = fakeApp();
    const seenByHook: Array<UnitOfWork | undefined> = [];
    const unit = new UnitOfWork(
      app.registry,
      {},
      {
        describe: () => 'the test unit',
        attempt: async (self) => {
          self.afterCommit(() => seenByHook.push(currentUnitOfWork()));
          await self.manager('default', 'the test').query('INSERT 1');
          return self.settle(true);
        },
      },
    );
    await expect(unit.enter()).resolves.toBe('committed');
    expect(seenByHook).toEqual([undefined]);
  });

  it('keep the outcome when one fails: the next hook runs and the unit of work stays committed', async () => {
    const app = fakeApp();
    const ran: string[] = [];
    const value = await app.runner.run(async (tx) => {
      app.host.afterCommit(() => {
        throw new Error('the mailer is down');
      });
      app.host.afterCommit(() => ran.push('second'));
      await tx.query('INSERT 1');
      return 'saved';
    });
    expect(value).toBe('saved');
    expect(ran).toEqual(['second']);
    expect(app.host.stats()).toMatchObject({ commits: 1 });
  });

  it('run afterRollback hooks alone when the work fails', async () => {
    const app = fakeApp();
    const ran: string[] = [];
    await expect(
      app.runner.run(async (tx) => {
        app.host.afterCommit(() => ran.push('afterCommit'));
        app.host.afterRollback(() => ran.push('afterRollback'));
        await tx.query('INSERT 1');
        throw new Error('the work failed');
      }),
    ).rejects.toThrow('the work failed');
    expect(ran).toEqual(['afterRollback']);
  });
});

describe('savepoints opened by hand on the runner', () => {
  it('sends SAVEPOINT and ROLLBACK TO for startTransaction() and rollbackTransaction()', async () => {
    const app = fakeApp();
    await app.runner.run(async (tx) => {
      const runner = tx.queryRunner!;
      await runner.startTransaction();
      await tx.query('A');
      await runner.rollbackTransaction();
      await runner.startTransaction();
      await tx.query('B');
      await runner.commitTransaction();
    });
    expect(app.pool.statements()).toEqual([
      'BEGIN',
      'SAVEPOINT typeorm_1',
      'A',
      'ROLLBACK TO SAVEPOINT typeorm_1',
      'SAVEPOINT typeorm_1',
      'B',
      'RELEASE SAVEPOINT typeorm_1',
      'COMMIT',
    ]);
  });

  it("refuses to commit the unit of work's own transaction from the runner", async () => {
    const app = fakeApp();
    const run = app.runner.run(async (tx) => {
      await tx.query('A');
      await tx.queryRunner!.commitTransaction();
    });
    await expect(run).rejects.toThrow(TransactionalError);
    await expect(run).rejects.toThrow(/commitTransaction\(\) was called on the query runner/);
    expect(app.pool.statements()).toEqual(['BEGIN', 'A', 'ROLLBACK']);
  });
});

describe('a lost connection', () => {
  it('refuses later statements, sends no ROLLBACK and discards the connection', async () => {
    const app = fakeApp();
    const run = app.runner.run(async (tx) => {
      await tx.query('INSERT 1');
      app.pool.lose();
      await tx.query('INSERT 2');
    });
    await expect(run).rejects.toThrow(/was lost while its transaction was open/);
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1']);
    expect({ released: app.pool.released, destroyed: app.pool.destroyed }).toEqual({ released: 0, destroyed: 1 });
    expect(app.host.stats()).toMatchObject({ connectionsHeld: 0, rollbacks: 1 });
  });
});

describe('streams of rows', () => {
  it('refuses a query while a stream is open, and commits once it was read to its end', async () => {
    const app = fakeApp();
    await app.runner.run(async (tx) => {
      const stream = await tx.queryRunner!.stream('STREAM');
      await expect(tx.query('DURING')).rejects.toBeInstanceOf(OpenStreamError);
      for await (const row of stream) expect(row).toBeDefined();
      await tx.query('AFTER');
    });
    expect(app.pool.statements()).toEqual(['BEGIN', 'STREAM', 'AFTER', 'COMMIT']);
  });

  it('fails the COMMIT of a unit of work that left a stream open, and discards its connection', async () => {
    const app = fakeApp();
    await expect(app.runner.run((tx) => tx.queryRunner!.stream('STREAM').then(() => 'left open'))).rejects.toBeInstanceOf(
      OpenStreamError,
    );
    expect(app.pool.statements()).toEqual(['BEGIN', 'STREAM']);
    expect({ released: app.pool.released, destroyed: app.pool.destroyed }).toEqual({ released: 0, destroyed: 1 });
  });
});
