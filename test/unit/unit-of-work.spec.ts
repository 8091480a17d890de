import { TransactionAbortedError } from '../../lib/errors';
import { databaseError, fakeApp } from '../support/fake-data-source';

/** Answers like PostgreSQL: a statement containing `fail` fails; COMMIT after a failure is answered ROLLBACK. */
function postgresLike(app: ReturnType<typeof fakeApp>): void {
  let aborted = false;
  app.pool.respond = (sql) => {
    if (sql === 'BEGIN') aborted = false;
    if (sql.startsWith('ROLLBACK TO SAVEPOINT')) aborted = false;
    if (sql === 'COMMIT') return { command: aborted ? 'ROLLBACK' : 'COMMIT' };
    if (sql.includes('fail')) {
      aborted = true;
      throw databaseError(`statement failed: ${sql}`, { code: '23505' });
    }
    return { command: 'OK', rows: [] };
  };
}

describe('a unit of work, against a recording fake pool', () => {
  it('sends BEGIN with the first statement and COMMIT before resolving, and releases the connection once', async () => {
    const app = fakeApp();
    const value = await app.runner.run(async (tx) => {
      expect(app.pool.acquired).toBe(0);
      await tx.query('INSERT 1');
      await tx.query('INSERT 2');
      return 'done';
    });

    expect(value).toBe('done');
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1', 'INSERT 2', 'COMMIT']);
    expect({ acquired: app.pool.acquired, released: app.pool.released }).toEqual({ acquired: 1, released: 1 });
    expect(app.host.stats()).toMatchObject({ commits: 1, rollbacks: 0, openUnitsOfWork: 0, connectionsHeld: 0 });
  });

  it('takes nothing and sends nothing for work that never queries', async () => {
    const app = fakeApp();
    await app.runner.run(() => 'nothing');
    expect(app.pool.statements()).toEqual([]);
    expect(app.pool.acquired).toBe(0);
  });

  it("rolls back and rethrows the work's own error", async () => {
    const app = fakeApp();
    const error = new Error('the work failed');
    await expect(
      app.runner.run(async (tx) => {
        await tx.query('INSERT 1');
        throw error;
      }),
    ).rejects.toBe(error);
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1', 'ROLLBACK']);
    expect(app.host.stats()).toMatchObject({ commits: 0, rollbacks: 1 });
  });

  it('refuses statements after a caught failure on PostgreSQL without sending them, and ends in ROLLBACK', async () => {
    const app = fakeApp();
    postgresLike(app);
    const hooks: string[] = [];
    const run = app.runner.run(async (tx) => {
      app.host.afterCommit(() => hooks.push('afterCommit'));
      app.host.afterRollback(() => hooks.push('afterRollback'));
      await tx.query('INSERT 1');
      await tx.query('INSERT fail').catch(() => undefined);
      await expect(tx.query('INSERT 2')).rejects.toBeInstanceOf(TransactionAbortedError);
      return 'caught';
    });

    await expect(run).rejects.toBeInstanceOf(TransactionAbortedError);
    expect(app.pool.statements()).toEqual(['BEGIN', 'INSERT 1', 'INSERT fail', 'ROLLBACK']);
    expect(hooks).toEqual(['afterRollback']);
    expect(app.host.stats()).toMatchObject({ commits: 0, rollbacks: 1 });
  });

  it('fails a COMMIT that PostgreSQL answered with ROLLBACK', async () => {
    const app = fakeApp();
    app.pool.respond = (sql) => ({ command: sql === 'COMMIT' ? 'ROLLBACK' : 'OK', rows: [] });
    await expect(app.runner.run((tx) => tx.query('INSERT 1'))).rejects.toThrow(/answered the COMMIT .* with ROLLBACK/);
    expect(app.host.stats()).toMatchObject({ commits: 0, rollbacks: 1 });
  });

  it('keeps the transaction when a savepoint absorbs a failure', async () => {
    const app = fakeApp();
    postgresLike(app);
    await app.runner.run(async (tx) => {
      await tx.query('INSERT 1');
      await tx.transaction((sp) => sp.query('INSERT fail')).catch(() => undefined);
      await tx.query('INSERT 2');
    });
    expect(app.pool.statements()).toEqual([
      'BEGIN',
      'INSERT 1',
      'SAVEPOINT typeorm_1',
      'INSERT fail',
      'ROLLBACK TO SAVEPOINT typeorm_1',
      'INSERT 2',
      'COMMIT',
    ]);
  });

  it('runs savepoints started together one after another, and holds the enclosing level until each ends', async () => {
    const app = fakeApp();
    await app.runner.run(async (tx) => {
      let opened!: () => void;
      const firstOpen = new Promise<void>((resolve) => (opened = resolve));
      const first = tx.transaction(async (sp) => {
        opened();
        await sp.query('A1');
        await new Promise((resolve) => setImmediate(resolve));
        await sp.query('A2');
      });
      const second = tx.transaction((sp) => sp.query('B1'));
      // The enclosing level goes on while the first savepoint is open.
      await firstOpen;
      await Promise.all([first, second, tx.query('OUTER')]);
    });
    expect(app.pool.statements()).toEqual([
      'BEGIN',
      'SAVEPOINT typeorm_1',
      'A1',
      'A2',
      'RELEASE SAVEPOINT typeorm_1',
      'SAVEPOINT typeorm_1',
      'B1',
      'RELEASE SAVEPOINT typeorm_1',
      'OUTER',
      'COMMIT',
    ]);
  });

  it('drops the hooks of a savepoint that rolled back and keeps those of one that was released', async () => {
    const app = fakeApp();
    const hooks: string[] = [];
    await app.runner.run(async (tx) => {
      await tx
        .transaction(async (sp) => {
          app.host.afterCommit(() => hooks.push('rolled back'));
          await sp.query('A');
          throw new Error('undo');
        })
        .catch(() => undefined);
      await tx.transaction(async (sp) => {
        app.host.afterCommit(() => hooks.push('kept'));
        await sp.query('B');
      });
    });
    expect(hooks).toEqual(['kept']);
  });

  it('runs the work again after a deadlock when retry allows, with a fresh transaction', async () => {
    const app = fakeApp();
    let attempts = 0;
    app.pool.respond = (sql) => {
      if (sql === 'UPDATE' && ++attempts === 1) throw databaseError('deadlock detected', { code: '40P01' });
      return { command: 'OK', rows: [] };
    };
    await app.runner.run((tx) => tx.query('UPDATE'), { retry: { attempts: 2, baseDelayMs: 0 } });
    expect(app.pool.statements()).toEqual(['BEGIN', 'UPDATE', 'ROLLBACK', 'BEGIN', 'UPDATE', 'COMMIT']);
    expect(app.host.stats()).toMatchObject({ retries: 1, commits: 1, rollbacks: 1 });
  });

  it('retries a unit of work whose caught deadlock aborted it', async () => {
    const app = fakeApp();
    let attempts = 0;
    app.pool.respond = (sql) => {
      if (sql === 'UPDATE' && ++attempts === 1) throw databaseError('deadlock detected', { code: '40P01' });
      return { command: 'OK', rows: [] };
    };
    await app.runner.run(
      async (tx) => {
        await tx.query('UPDATE').catch(() => undefined);
        await tx.query('AFTER');
      },
      { retry: { attempts: 2, baseDelayMs: 0 } },
    );
    expect(app.pool.statements()).toEqual(['BEGIN', 'UPDATE', 'ROLLBACK', 'BEGIN', 'UPDATE', 'AFTER', 'COMMIT']);
  });

  describe('on MySQL/MariaDB', () => {
    /** Fails `DUPLICATE` (statement only) and `DEADLOCK` (the server ends the transaction); `DO 0` reports it. */
    function mysqlLike(app: ReturnType<typeof fakeApp>): void {
      let open = false;
      app.pool.respond = (sql) => {
        if (sql === 'START TRANSACTION') open = true;
        if (sql === 'COMMIT' || sql === 'ROLLBACK') open = false;
        if (sql === 'DO 0') return { serverStatus: open ? 3 : 2 };
        if (sql === 'DUPLICATE') throw databaseError('Duplicate entry', { errno: 1062 });
        if (sql === 'DEADLOCK') {
          open = false;
          throw databaseError('Deadlock found', { errno: 1213 });
        }
        return { serverStatus: open ? 3 : 2 };
      };
    }

    it('asks the server after a failure, and goes on when only the statement was undone', async () => {
      const app = fakeApp('mysql');
      mysqlLike(app);
      await app.runner.run(async (tx) => {
        await tx.query('DUPLICATE').catch(() => undefined);
        await tx.query('INSERT');
      });
      expect(app.pool.statements()).toEqual(['START TRANSACTION', 'DUPLICATE', 'DO 0', 'INSERT', 'COMMIT']);
    });

    it('never sends a statement after the server ended the transaction', async () => {
      const app = fakeApp('mysql');
      mysqlLike(app);
      const run = app.runner.run(async (tx) => {
        await tx.query('DEADLOCK').catch(() => undefined);
        await tx.query('INSERT');
      });
      await expect(run).rejects.toBeInstanceOf(TransactionAbortedError);
      expect(app.pool.statements()).toEqual(['START TRANSACTION', 'DEADLOCK', 'DO 0', 'ROLLBACK']);
    });

    it('sends nothing for a savepoint the server already rolled back with its transaction', async () => {
      const app = fakeApp('mysql');
      mysqlLike(app);
      const run = app.runner.run(async (tx) => {
        await tx.transaction((sp) => sp.query('DEADLOCK')).catch(() => undefined);
      });
      await expect(run).rejects.toBeInstanceOf(TransactionAbortedError);
      expect(app.pool.statements()).toEqual(['START TRANSACTION', 'SAVEPOINT typeorm_1', 'DEADLOCK', 'DO 0', 'ROLLBACK']);
    });
  });
});
