/**
 * Savepoints started together (Promise.all / allSettled of tx.transaction(), concurrent nested runs)
 * run one after another on the unit of work's connection, and the enclosing level's statements wait
 * for an open savepoint: each savepoint keeps or undoes exactly its own work.
 */
import { Controller, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EntityManager } from 'typeorm';
import { TransactionalModule, TransactionHost, TransactionRunner, Tx } from '../../lib';
import { adapters } from '../support/app';
import { engines, typeormOptions } from '../support/databases';
import { NumberedItem, tableOf } from '../support/entities';
import { ErrorBodyFilter } from '../support/error-body-filter';
import { call } from '../support/http';
import { yieldToOthers } from '../support/latch';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(NumberedItem);

const insert = (tx: EntityManager, id: number, label: string) => tx.insert(NumberedItem, { id, label });
const fail = () => {
  throw new Error('undo this savepoint');
};

let hooksRan: string[] = [];

@Controller('savepoints')
class SavepointsController {
  constructor(
    private readonly host: TransactionHost,
    private readonly runner: TransactionRunner,
  ) {}

  /** Two savepoints, each writing twice with a pause between: both kept. */
  @Post('all')
  async all(@Tx() tx: EntityManager) {
    await Promise.all(
      [10, 20].map((base) =>
        tx.transaction(async (savepoint) => {
          await insert(savepoint, base + 1, `${base}: first`);
          await yieldToOthers();
          await insert(savepoint, base + 2, `${base}: second`);
        }),
      ),
    );
    return { ok: true };
  }

  /** The second of two savepoints fails after writing: only its own writes and hooks are undone. */
  @Post('all-settled')
  async allSettled(@Tx() tx: EntityManager) {
    const results = await Promise.allSettled([
      tx.transaction(async (savepoint) => {
        this.host.afterCommit(() => hooksRan.push('kept savepoint'));
        await insert(savepoint, 11, 'kept: first');
        await yieldToOthers();
        await insert(savepoint, 12, 'kept: second');
      }),
      tx.transaction(async (savepoint) => {
        this.host.afterCommit(() => hooksRan.push('failed savepoint'));
        await insert(savepoint, 21, 'undone: first');
        await yieldToOthers();
        await insert(savepoint, 22, 'undone: second');
        fail();
      }),
    ]);
    return { outcomes: results.map((result) => result.status) };
  }

  /** The first savepoint fails while the second waits for its turn. */
  @Post('first-fails')
  async firstFails(@Tx() tx: EntityManager) {
    const results = await Promise.allSettled([
      tx.transaction(async (savepoint) => {
        await insert(savepoint, 11, 'undone');
        await yieldToOthers();
        fail();
      }),
      tx.transaction((savepoint) => insert(savepoint, 21, 'kept')),
    ]);
    return { outcomes: results.map((result) => result.status) };
  }

  /** The handler writes while one of its savepoints is open; the savepoint then fails. */
  @Post('outer-during-savepoint')
  async outerDuringSavepoint(@Tx() tx: EntityManager) {
    const savepoint = tx.transaction(async (inner) => {
      await insert(inner, 11, 'undone: first');
      await yieldToOthers();
      await insert(inner, 12, 'undone: second');
      fail();
    });
    const outer = insert(tx, 1, 'outer');
    const [first, second] = await Promise.allSettled([savepoint, outer]);
    return { outcomes: [first.status, second.status] };
  }

  /** Two nested runs at once, one of them failing. */
  @Post('nested-runs')
  async nestedRuns(@Tx() tx: EntityManager) {
    await insert(tx, 1, 'outer');
    const results = await Promise.allSettled([
      this.runner.run(
        async (inner) => {
          await insert(inner, 11, 'nested kept');
          await yieldToOthers();
          await insert(inner, 12, 'nested kept, second');
        },
        { propagation: 'nested' },
      ),
      this.runner.run(
        async (inner) => {
          await insert(inner, 21, 'nested undone');
          await yieldToOthers();
          fail();
        },
        { propagation: 'nested' },
      ),
    ]);
    return { outcomes: results.map((result) => result.status) };
  }

  /** Savepoints inside savepoints, started together at both levels. */
  @Post('nested-all')
  async nestedAll(@Tx() tx: EntityManager) {
    const results = await Promise.allSettled(
      [100, 200].map((base) =>
        tx.transaction(async (outer) => {
          await insert(outer, base, `${base}`);
          await Promise.allSettled(
            [1, 2].map((offset) =>
              outer.transaction(async (inner) => {
                await insert(inner, base + offset, `${base + offset}`);
                await yieldToOthers();
                if (offset === 2) fail();
              }),
            ),
          );
          if (base === 200) fail();
        }),
      ),
    );
    return { outcomes: results.map((result) => result.status) };
  }
}

describe.each(engines)('concurrent savepoints on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `savepoints-e2e-${engine.name}-${adapter}`;
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
        controllers: [SavepointsController],
        providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
      }),
    });

    beforeEach(() => {
      hooksRan = [];
      sql.clear();
    });

    it('runs savepoints started together one after another, each with its own statements, and keeps both', async () => {
      const reply = await call('POST', `${testApp.url}/savepoints/all`);

      expect(reply.status).toBe(201);
      expect(await labelsIn(db, TABLE)).toEqual(['10: first', '10: second', '20: first', '20: second']);
      const statements = sql.statements().filter((statement) => !/^(BEGIN|START TRANSACTION|COMMIT)/.test(statement));
      expect(statements.map((statement) => statement.replace(/^INSERT.*/s, 'INSERT'))).toEqual([
        'SAVEPOINT typeorm_1',
        'INSERT',
        'INSERT',
        'RELEASE SAVEPOINT typeorm_1',
        'SAVEPOINT typeorm_1',
        'INSERT',
        'INSERT',
        'RELEASE SAVEPOINT typeorm_1',
      ]);
    });

    it('undoes only the failed savepoint of two settled together, and drops only its hooks', async () => {
      const reply = await call<{ outcomes: string[] }>('POST', `${testApp.url}/savepoints/all-settled`);

      expect(reply.status).toBe(201);
      expect(reply.body.outcomes).toEqual(['fulfilled', 'rejected']);
      expect(await labelsIn(db, TABLE)).toEqual(['kept: first', 'kept: second']);
      expect(hooksRan).toEqual(['kept savepoint']);
    });

    it('lets the second savepoint keep its work when the first one fails', async () => {
      const reply = await call<{ outcomes: string[] }>('POST', `${testApp.url}/savepoints/first-fails`);

      expect(reply.body.outcomes).toEqual(['rejected', 'fulfilled']);
      expect(await labelsIn(db, TABLE)).toEqual(['kept']);
    });

    it('holds a statement of the enclosing level until its open savepoint ends, so the rollback spares it', async () => {
      const reply = await call<{ outcomes: string[] }>('POST', `${testApp.url}/savepoints/outer-during-savepoint`);

      expect(reply.body.outcomes).toEqual(['rejected', 'fulfilled']);
      expect(await labelsIn(db, TABLE)).toEqual(['outer']);
      const control = sql.statements().map((statement) => statement.replace(/^INSERT.*/s, 'INSERT'));
      // The outer INSERT comes after the savepoint's ROLLBACK TO.
      expect(control.lastIndexOf('INSERT')).toBeGreaterThan(control.indexOf('ROLLBACK TO SAVEPOINT typeorm_1'));
    });

    it("gives concurrent nested runs their own savepoints: the failed one's work alone is undone", async () => {
      const reply = await call<{ outcomes: string[] }>('POST', `${testApp.url}/savepoints/nested-runs`);

      expect(reply.status).toBe(201);
      expect(reply.body.outcomes).toEqual(['fulfilled', 'rejected']);
      expect(await labelsIn(db, TABLE)).toEqual(['nested kept', 'nested kept, second', 'outer']);
    });

    it('keeps each level of concurrent savepoints inside concurrent savepoints apart', async () => {
      const reply = await call<{ outcomes: string[] }>('POST', `${testApp.url}/savepoints/nested-all`);

      expect(reply.body.outcomes).toEqual(['fulfilled', 'rejected']);
      expect(await labelsIn(db, TABLE)).toEqual(['100', '101']);
      expect(sql.statements()).toContain('SAVEPOINT typeorm_2');
    });
  });
});
