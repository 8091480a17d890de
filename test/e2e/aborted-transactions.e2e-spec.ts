/**
 * Truthful outcomes: a unit of work whose transaction the database aborted never reports a commit.
 * On PostgreSQL a failed statement aborts the transaction (or the savepoint it ran in) even when the
 * handler catches the error; on MariaDB an ordinary failure undoes only its own statement. Each case
 * checks what the client got, what the database holds, which hooks ran and what stats() counted.
 */
import { Controller, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EntityManager } from 'typeorm';
import {
  TransactionAbortedError,
  TransactionalModule,
  type TransactionalStats,
  TransactionHost,
  TransactionRunner,
  Tx,
} from '../../lib';
import { adapters } from '../support/app';
import { engines, typeormOptions } from '../support/databases';
import { NumberedItem, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { call } from '../support/http';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(NumberedItem);

/** Hooks that ran in the current test. */
let hooksRan: string[] = [];
/** The error the handler caught from a later statement, when it caught one. */
let laterError: unknown;

const duplicate = (tx: EntityManager, id: number) => tx.insert(NumberedItem, { id, label: `duplicate of ${id}` });

@Controller('aborted')
class AbortedController {
  constructor(private readonly host: TransactionHost) {}

  private hooks(): void {
    this.host.afterCommit(() => hooksRan.push('afterCommit'));
    this.host.afterRollback(() => hooksRan.push('afterRollback'));
  }

  @Post('caught-failure')
  async caughtFailure(@Tx() tx: EntityManager) {
    this.hooks();
    await tx.insert(NumberedItem, { id: 1, label: 'before the failure' });
    await duplicate(tx, 1).catch(() => undefined);
    return { ok: true };
  }

  @Post('caught-failure-then-query')
  async caughtFailureThenQuery(@Tx() tx: EntityManager) {
    await tx.insert(NumberedItem, { id: 1, label: 'before the failure' });
    await duplicate(tx, 1).catch(() => undefined);
    try {
      await tx.insert(NumberedItem, { id: 2, label: 'after the failure' });
    } catch (error) {
      laterError = error;
      throw error;
    }
    return { ok: true };
  }

  @Post('savepoint-absorbs')
  async savepointAbsorbs(@Tx() tx: EntityManager) {
    this.hooks();
    await tx.insert(NumberedItem, { id: 1, label: 'outer, before' });
    await tx.transaction((savepoint) => duplicate(savepoint, 1)).catch(() => undefined);
    await tx.insert(NumberedItem, { id: 2, label: 'outer, after' });
    return { ok: true };
  }

  @Post('savepoint-catches-inside')
  async savepointCatchesInside(@Tx() tx: EntityManager) {
    await tx.insert(NumberedItem, { id: 1, label: 'outer' });
    let inner: string;
    try {
      await tx.transaction(async (savepoint) => {
        await savepoint.insert(NumberedItem, { id: 2, label: 'in the savepoint' });
        await duplicate(savepoint, 1).catch(() => undefined);
      });
      inner = 'kept';
    } catch (error) {
      inner = (error as Error).name;
    }
    await tx.insert(NumberedItem, { id: 3, label: 'outer, after' });
    return { inner };
  }

  @Post('unseen-failure')
  async unseenFailure(@Tx() tx: EntityManager) {
    this.hooks();
    await tx.insert(NumberedItem, { id: 1, label: 'before the failure' });
    // A statement on the driver connection itself: the library never sees it fail.
    const client = tx.queryRunner as unknown as { databaseConnection: { query(sql: string): Promise<unknown> } };
    await client.databaseConnection.query('SELECT 1/0').catch(() => undefined);
    return { ok: true };
  }
}

describe.each(engines)('aborted transactions on $name', (engine) => {
  const postgres = engine.name === 'postgres';
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `aborted-e2e-${engine.name}-${adapter}`;
    const sql = new RecordingSqlLogger();
    const testApp = suiteApp(db, {
      applicationName,
      tables: [NumberedItem],
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [NumberedItem], logger: sql })),
          TransactionalModule.forRoot(),
        ],
        controllers: [AbortedController],
        providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
      }),
    });
    let host: TransactionHost;
    let before: TransactionalStats;

    beforeAll(() => {
      host = testApp.get(TransactionHost);
    });

    beforeEach(() => {
      hooksRan = [];
      laterError = undefined;
      sql.clear();
      before = host.stats();
    });

    const counted = () => {
      const after = host.stats();
      return { commits: after.commits - before.commits, rollbacks: after.rollbacks - before.rollbacks };
    };

    it('reports what the database did with a caught failed statement', async () => {
      const reply = await call<ErrorBody>('POST', `${testApp.url}/aborted/caught-failure`);

      if (postgres) {
        // PostgreSQL aborted the transaction at the failure: nothing was written, and nobody hears "committed".
        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('TransactionAbortedError');
        expect(reply.body.message).toMatch(/duplicate key/);
        expect(await labelsIn(db, TABLE)).toEqual([]);
        expect(hooksRan).toEqual(['afterRollback']);
        expect(counted()).toEqual({ commits: 0, rollbacks: 1 });
        expect(sql.transactionControl()).toEqual(['BEGIN', 'ROLLBACK']);
      } else {
        // MariaDB undid the failed statement alone: the transaction went on and committed.
        expect(reply.status).toBe(201);
        expect(await labelsIn(db, TABLE)).toEqual(['before the failure']);
        expect(hooksRan).toEqual(['afterCommit']);
        expect(counted()).toEqual({ commits: 1, rollbacks: 0 });
      }
    });

    it('refuses every later statement of an aborted transaction at once, naming the first failure and its call site', async () => {
      const reply = await call<ErrorBody>('POST', `${testApp.url}/aborted/caught-failure-then-query`);

      if (postgres) {
        expect(reply.status).toBe(500);
        expect(laterError).toBeInstanceOf(TransactionAbortedError);
        const message = (laterError as Error).message;
        expect(message).toMatch(/duplicate key/);
        expect(message).toMatch(/AbortedController\.caughtFailureThenQuery .*aborted-transactions\.e2e-spec\.ts/);
        expect(message).toMatch(/PostgreSQL aborted the transaction/);
        expect(await labelsIn(db, TABLE)).toEqual([]);
        // The refused INSERT never reached the database.
        expect(sql.failures()).toHaveLength(1);
        expect(sql.statements().filter((statement) => /INSERT/.test(statement))).toHaveLength(2);
      } else {
        expect(reply.status).toBe(201);
        expect(await labelsIn(db, TABLE)).toEqual(['after the failure', 'before the failure']);
      }
    });

    it('keeps the transaction usable when a savepoint absorbs the failure', async () => {
      const reply = await call('POST', `${testApp.url}/aborted/savepoint-absorbs`);

      expect(reply.status).toBe(201);
      expect(await labelsIn(db, TABLE)).toEqual(['outer, after', 'outer, before']);
      expect(hooksRan).toEqual(['afterCommit']);
      expect(counted()).toEqual({ commits: 1, rollbacks: 0 });
      expect(sql.transactionControl()).toEqual([
        postgres ? 'BEGIN' : 'START TRANSACTION',
        'SAVEPOINT typeorm_1',
        'ROLLBACK TO SAVEPOINT typeorm_1',
        'COMMIT',
      ]);
    });

    it('rolls back a savepoint whose callback caught a failure the database aborted it for, and goes on', async () => {
      const reply = await call<{ inner: string }>('POST', `${testApp.url}/aborted/savepoint-catches-inside`);

      expect(reply.status).toBe(201);
      if (postgres) {
        expect(reply.body.inner).toBe('TransactionAbortedError');
        expect(await labelsIn(db, TABLE)).toEqual(['outer', 'outer, after']);
      } else {
        expect(reply.body.inner).toBe('kept');
        expect(await labelsIn(db, TABLE)).toEqual(['in the savepoint', 'outer', 'outer, after']);
      }
    });

    if (postgres) {
      it('fails a COMMIT that PostgreSQL answers with ROLLBACK', async () => {
        const reply = await call<ErrorBody>('POST', `${testApp.url}/aborted/unseen-failure`);

        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('TransactionAbortedError');
        expect(reply.body.message).toMatch(/answered the COMMIT .* with ROLLBACK/);
        expect(await labelsIn(db, TABLE)).toEqual([]);
        expect(hooksRan).toEqual(['afterRollback']);
        expect(counted()).toEqual({ commits: 0, rollbacks: 1 });
      });
    }
  });

  describe('TransactionRunner.run()', () => {
    const applicationName = `aborted-e2e-runner-${engine.name}`;
    const testApp = suiteApp(db, {
      applicationName,
      tables: [NumberedItem],
      app: () => ({
        adapter: 'express',
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [NumberedItem] })),
          TransactionalModule.forRoot(),
        ],
      }),
    });
    let runner: TransactionRunner;
    let host: TransactionHost;

    beforeAll(() => {
      runner = testApp.get(TransactionRunner);
      host = testApp.get(TransactionHost);
    });

    it('rejects, runs the afterRollback hooks and counts a rollback when fn caught a failure that aborted the transaction', async () => {
      const ran: string[] = [];
      const before = host.stats();

      const run = runner.run(async (tx) => {
        host.afterCommit(() => ran.push('afterCommit'));
        host.afterRollback(() => ran.push('afterRollback'));
        await tx.insert(NumberedItem, { id: 1, label: 'first' });
        await duplicate(tx, 1).catch(() => undefined);
        return 'done';
      });

      if (postgres) {
        await expect(run).rejects.toBeInstanceOf(TransactionAbortedError);
        expect(ran).toEqual(['afterRollback']);
        expect(host.stats().rollbacks - before.rollbacks).toBe(1);
        expect(host.stats().commits - before.commits).toBe(0);
        expect(await labelsIn(db, TABLE)).toEqual([]);
      } else {
        await expect(run).resolves.toBe('done');
        expect(ran).toEqual(['afterCommit']);
        expect(await labelsIn(db, TABLE)).toEqual(['first']);
      }
    });

    it("keeps the outer work when a nested run's failure is caught", async () => {
      const value = await runner.run(async (tx) => {
        await tx.insert(NumberedItem, { id: 1, label: 'outer' });
        await runner.run((inner) => duplicate(inner, 1), { propagation: 'nested' }).catch(() => undefined);
        await tx.insert(NumberedItem, { id: 2, label: 'outer, after' });
        return 'done';
      });

      expect(value).toBe('done');
      expect(await labelsIn(db, TABLE)).toEqual(['outer', 'outer, after']);
    });
  });
});
