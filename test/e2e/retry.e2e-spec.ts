import { type ArgumentsHost, Catch, Controller, HttpException, Post, Req } from '@nestjs/common';
import { APP_FILTER, BaseExceptionFilter } from '@nestjs/core';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { createConnection, type Connection as MysqlConnection } from 'mysql2/promise';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DataSource, type DataSourceOptions, type EntityManager, QueryFailedError } from 'typeorm';
import {
  Transactional,
  TransactionalModule,
  type TransactionalModuleOptions,
  TransactionalOptionsError,
  TransactionHost,
  TransactionRunner,
  Tx,
} from '../../lib';
import { CONNECT_TIMEOUT_MS, reasonOf } from '../support/database-urls';
import { type Engine, engines, postgresEngine, typeormOptions } from '../support/databases';
import { Account, tableOf } from '../support/entities';
import { barrier, latch } from '../support/latch';
import { type MariadbObserver, waitFor } from '../support/observer';
import { RecordingNestLogger, RecordingSqlLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const ACCOUNTS = tableOf(Account);
const applicationName = 'retry-e2e';
const POOL_SIZE = 10;
/** The account whose balance the tests increment; account 2 is scratch space for the MariaDB interferer. */
const COUNTER = 1;
const SCRATCH = 2;
const RETRY = { attempts: 10, baseDelayMs: 5 } as const;

/**
 * The library waits between attempts with `setTimeout` from `node:timers/promises`. A test that sets
 * this gate decides when that wait ends; otherwise the real timer runs.
 */
let mockBackoffGate: ((ms: number) => Promise<void>) | undefined;
jest.mock('node:timers/promises', () => {
  const actual = jest.requireActual<typeof import('node:timers/promises')>('node:timers/promises');
  return {
    ...actual,
    setTimeout: <T>(ms?: number, value?: T, options?: Parameters<typeof actual.setTimeout>[2]) =>
      mockBackoffGate ? mockBackoffGate(ms ?? 0).then(() => value as T) : actual.setTimeout(ms, value, options),
  };
});

/**
 * Read-then-write increments of the counter that are sure to collide: the first `readers` calls
 * read the counter and wait until all of them have read it; calls that start before that wait too,
 * before reading (so they hold no connection meanwhile). Then everybody writes at once.
 * Later calls (retries) go straight through.
 */
class Contention {
  invocations = 0;
  private read = 0;
  private readonly everyoneRead = latch();

  constructor(private readonly readers: number) {}

  async increment(tx: EntityManager): Promise<void> {
    const index = this.invocations++;
    if (index >= this.readers) await this.everyoneRead.promise;
    const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
    if (index < this.readers) {
      this.read += 1;
      if (this.read === this.readers) this.everyoneRead.resolve();
      await this.everyoneRead.promise;
    }
    await tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 });
  }
}

let contention = new Contention(0);

/** Express request, as far as these tests read it. */
type HttpRequest = IncomingMessage & { res?: ServerResponse };

/** What POST /counter/probe does; set by the test that calls it. */
let probeRoute: (request: HttpRequest) => Promise<unknown> = async () => undefined;

@Controller('counter')
class CounterController {
  @Post('increment')
  @Transactional({ isolationLevel: 'SERIALIZABLE', retry: RETRY })
  async increment(@Tx() tx: EntityManager): Promise<{ ok: true }> {
    await contention.increment(tx);
    return { ok: true };
  }

  @Post('probe')
  @Transactional({ isolationLevel: 'SERIALIZABLE', retry: { attempts: 3, baseDelayMs: 5 } })
  async probe(@Req() request: HttpRequest): Promise<{ ok: true }> {
    await probeRoute(request);
    return { ok: true };
  }
}

/**
 * BEGIN / COMMIT / ROLLBACK of the data source, in order: `BEGIN` for however the transaction was
 * opened, savepoints and MariaDB's SET TRANSACTION left out.
 */
function beginsAndEnds(log: RecordingSqlLogger): string[] {
  return log
    .transactionControl()
    .flatMap((sql) => (/^(BEGIN|START TRANSACTION)/.test(sql) ? ['BEGIN'] : /^(COMMIT|ROLLBACK)$/.test(sql) ? [sql] : []));
}

/** The driver's code for a failure worth a retry, or undefined for any other error. */
function retryableCode(error: unknown): string | undefined {
  if (!(error instanceof QueryFailedError)) return undefined;
  const driver = (error as QueryFailedError & { driverError: { code?: string; errno?: number } }).driverError;
  if (driver.code === '40001' || driver.code === '40P01') return driver.code;
  if (driver.errno === 1213) return String(driver.errno);
  return undefined;
}

describe.each(engines)('retry on $name', (engine: Engine) => {
  const sqlLog = new RecordingSqlLogger();
  const nestLog = new RecordingNestLogger();
  /** Every error the library surfaced to Nest, in order. */
  const surfacedErrors: unknown[] = [];

  @Catch()
  class RecordingFilter extends BaseExceptionFilter {
    override catch(exception: unknown, host: ArgumentsHost) {
      surfacedErrors.push(exception);
      super.catch(exception, host);
    }
  }
  /** What each engine reports when read-then-write increments collide under SERIALIZABLE. */
  const collisionCode = engine.name === 'postgres' ? '40001' : '1213';
  const db = suiteObserver(engine);
  let runner: TransactionRunner;
  let host: TransactionHost;
  /** MariaDB only: a second raw connection whose lock requests a test's transaction runs into. */
  let interferer: MysqlConnection | undefined;

  async function counterValue(id = COUNTER): Promise<number> {
    const [row] = await db.query<{ balance: number }>(
      `SELECT balance FROM ${ACCOUNTS} WHERE id = ${engine.name === 'postgres' ? '$1' : '?'}`,
      [id],
    );
    return Number(row.balance);
  }

  /**
   * Runs `write` (the transaction's UPDATE of the counter, after it read the counter) so that it fails
   * with a serialization failure or a deadlock, every time: someone else adds 100 to the counter and
   * commits in between.
   * PostgreSQL (SERIALIZABLE): another connection updates the row after our snapshot: 40001.
   * MariaDB (SERIALIZABLE, our read holds a shared lock): another connection, heavier (it changed a
   * row already), takes a shared lock too and asks to write; our write then closes the cycle, and
   * InnoDB rolls back the lighter transaction, ours: 1213.
   */
  async function collide(write: () => Promise<unknown>): Promise<void> {
    if (engine.name === 'postgres') {
      await db.query(`UPDATE ${ACCOUNTS} SET balance = balance + 100 WHERE id = ${COUNTER}`);
      await write();
      return;
    }
    const other = interferer!;
    await other.query('START TRANSACTION');
    await other.query(`UPDATE ${ACCOUNTS} SET balance = balance + 1 WHERE id = ${SCRATCH}`);
    await other.query(`SELECT balance FROM ${ACCOUNTS} WHERE id = ${COUNTER} LOCK IN SHARE MODE`);
    const blocked = other.query(`UPDATE ${ACCOUNTS} SET balance = balance + 100 WHERE id = ${COUNTER}`).then(
      () => undefined,
      (error: unknown) => error,
    );
    await waitFor(async () =>
      (await (db as MariadbObserver).processlist()).some(
        (p) => p.id === other.threadId && p.info !== null && p.info.includes('balance = balance + 100'),
      ),
    );
    let otherFailed: unknown;
    try {
      await write();
    } finally {
      otherFailed = await blocked;
      await other.query(otherFailed === undefined ? 'COMMIT' : 'ROLLBACK');
    }
    // After the finally, not inside it: a throw there would replace the write's own error.
    if (otherFailed !== undefined) throw new Error(`the interfering transaction failed instead: ${reasonOf(otherFailed)}`);
  }

  beforeAll(async () => {
    if (engine.name === 'mariadb') interferer = await createConnection({ uri: engine.url, connectTimeout: CONNECT_TIMEOUT_MS });
  });

  afterEach(() => {
    mockBackoffGate = undefined;
  });

  const testApp = suiteApp(db, {
    applicationName,
    tables: [Account],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(engine, { poolSize: POOL_SIZE, applicationName, entities: [Account], logger: sqlLog }),
        ),
        // The contending units of work wait for each other holding their connections on purpose, and the
        // tests count the warnings: no idle-in-transaction report.
        TransactionalModule.forRoot({ idleInTransactionMs: false }),
      ],
      controllers: [CounterController],
      providers: [{ provide: APP_FILTER, useClass: RecordingFilter }],
      logger: nestLog,
    }),
  });

  beforeAll(() => {
    runner = testApp.get(TransactionRunner);
    host = testApp.get(TransactionHost);
  });

  beforeEach(async () => {
    await db.query(`INSERT INTO ${ACCOUNTS} (id, balance) VALUES (${COUNTER}, 0), (${SCRATCH}, 0)`);
    sqlLog.clear();
    nestLog.clear();
  });

  afterAll(async () => {
    await interferer?.end();
  });

  describe('when concurrent read-then-write increments collide under SERIALIZABLE', () => {
    const N = POOL_SIZE;

    it(`fails some of them with the driver's ${engine.name === 'postgres' ? 'serialization failure (40001)' : 'deadlock (1213)'} without retry`, async () => {
      contention = new Contention(N);
      let hookRuns = 0;

      const results = await Promise.allSettled(
        Array.from({ length: N }, () =>
          runner.run(
            async (tx) => {
              host.afterCommit(() => void (hookRuns += 1));
              await contention.increment(tx);
            },
            { isolationLevel: 'SERIALIZABLE' },
          ),
        ),
      );

      const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
      const successes = N - failures.length;
      expect(failures.length).toBeGreaterThanOrEqual(1);
      expect(failures.map(retryableCode)).toEqual(failures.map(() => collisionCode));
      expect(contention.invocations).toBe(N);
      expect(await counterValue()).toBe(successes);
      expect(hookRuns).toBe(successes);
      expect(nestLog.warnings()).toEqual([]);
    });

    it('with retry, runs the failed ones again until all commit, logging each retry, and the total is exact', async () => {
      contention = new Contention(N);
      let hookRuns = 0;

      const results = await Promise.allSettled(
        Array.from({ length: N }, (_, i) =>
          runner.run(
            async (tx) => {
              host.afterCommit(() => void (hookRuns += 1));
              await contention.increment(tx);
            },
            { name: `increment #${i}`, isolationLevel: 'SERIALIZABLE', retry: RETRY },
          ),
        ),
      );

      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      expect(await counterValue()).toBe(N);
      // Runs again happened, and each one was logged.
      expect(contention.invocations).toBeGreaterThan(N);
      const warnings = nestLog.warnings();
      expect(warnings).toHaveLength(contention.invocations - N);
      for (const warning of warnings) {
        expect(warning).toMatch(/^increment #\d+: attempt \d+ of 10 failed \(.+\); running it again in \d+ ms\.$/);
      }
      // Hooks of the attempts that failed never ran: one per commit.
      expect(hookRuns).toBe(N);
    });
  });

  describe('when two transfers deadlock on rows they lock in opposite orders', () => {
    function lockRow(tx: EntityManager, id: number): Promise<Account> {
      return tx.createQueryBuilder(Account, 'row').setLock('pessimistic_write').where('row.id = :id', { id }).getOneOrFail();
    }

    it('runs the deadlock victim again, and both transfers commit', async () => {
      const retriesBefore = host.stats().retries;
      const bothHoldTheirFirstLock = barrier(2);
      const calls = new Map<string, number>();

      const transfer = (from: number, to: number, amount: number) => {
        const name = `transfer ${from}->${to}`;
        return runner.run(
          async (tx) => {
            const attempt = (calls.get(name) ?? 0) + 1;
            calls.set(name, attempt);
            const source = await lockRow(tx, from);
            // First attempts: each holds its first lock before asking for the second, a sure deadlock.
            if (attempt === 1) await bothHoldTheirFirstLock.arrive();
            const target = await lockRow(tx, to);
            await tx.update(Account, { id: from }, { balance: source.balance - amount });
            await tx.update(Account, { id: to }, { balance: target.balance + amount });
          },
          { name, retry: { attempts: 3, baseDelayMs: 5 } },
        );
      };
      const results = await Promise.allSettled([transfer(COUNTER, SCRATCH, 10), transfer(SCRATCH, COUNTER, 3)]);

      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      expect([...calls.values()].sort()).toEqual([1, 2]);
      const warnings = nestLog.warnings();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^transfer \d->\d: attempt 1 of 3 failed \(/);
      expect(warnings[0]).toContain(engine.name === 'postgres' ? '[40P01]' : '[ER_LOCK_DEADLOCK]');
      expect(host.stats().retries - retriesBefore).toBe(1);
      expect(await counterValue(COUNTER)).toBe(-10 + 3);
      expect(await counterValue(SCRATCH)).toBe(10 - 3);
    });
  });

  if (engine.name === 'postgres') {
    describe('when COMMIT itself fails with a serialization failure (write skew under SERIALIZABLE)', () => {
      it('runs the work again, and the afterCommit hooks of the attempt whose COMMIT failed never run', async () => {
        const bothRead = barrier(2);
        const secondWrote = latch();
        const firstCommitted = latch();
        const hooksRun: string[] = [];
        const attempts = new Map<string, number>();

        /** Reads both rows, then sets its own row: each transaction writes what the other read. */
        const bump = (name: string, id: number, afterWrite: () => Promise<void>) =>
          runner.run(
            async (tx) => {
              const attempt = (attempts.get(name) ?? 0) + 1;
              attempts.set(name, attempt);
              host.afterCommit(() => void hooksRun.push(`${name} attempt ${attempt}`));
              const rows = await tx.find(Account);
              const sum = rows.reduce((total, row) => total + row.balance, 0);
              if (attempt === 1) await bothRead.arrive();
              await tx.update(Account, { id }, { balance: sum + 1 });
              if (attempt === 1) await afterWrite();
            },
            { name, isolationLevel: 'SERIALIZABLE', retry: { attempts: 3, baseDelayMs: 5 } },
          );
        // Both write before either commits; the first commits, then the second's COMMIT is the one cancelled.
        const first = bump('first', COUNTER, () => secondWrote.promise).then(() => firstCommitted.resolve());
        const second = bump('second', SCRATCH, async () => {
          secondWrote.resolve();
          await firstCommitted.promise;
        });

        await Promise.all([first, second]);

        expect(sqlLog.failures()).toEqual(['COMMIT']);
        expect(attempts).toEqual(
          new Map([
            ['first', 1],
            ['second', 2],
          ]),
        );
        expect(hooksRun.sort()).toEqual(['first attempt 1', 'second attempt 2']);
        expect(nestLog.warnings()).toHaveLength(1);
        expect(nestLog.warnings()[0]).toMatch(/^second: attempt 1 of 3 failed \(could not serialize access .*\[40001\]\)/);
        // The second run saw the first one's write: 1, then 1 + 1.
        expect(await counterValue(COUNTER)).toBe(1);
        expect(await counterValue(SCRATCH)).toBe(2);
      });
    });
  }

  describe('when the first attempt fails and the second succeeds', () => {
    it('runs the work again in a fresh transaction, and only the committed attempt runs its afterCommit hooks', async () => {
      const managers: EntityManager[] = [];
      const hooksRun: number[] = [];
      let rolledBackHooks = 0;

      const result = await runner.run(
        async (tx) => {
          managers.push(tx);
          const attempt = managers.length;
          host.afterCommit(() => void hooksRun.push(attempt));
          host.afterRollback(() => void (rolledBackHooks += 1));
          const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
          const write = () => tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 });
          if (attempt === 1) await collide(write);
          else await write();
          return `committed on attempt ${attempt}`;
        },
        { name: 'nightly-increment', isolationLevel: 'SERIALIZABLE', retry: { attempts: 3, baseDelayMs: 5 } },
      );

      expect(result).toBe('committed on attempt 2');
      expect(managers).toHaveLength(2);
      expect(managers[1]).not.toBe(managers[0]);
      expect(managers[1].queryRunner).not.toBe(managers[0].queryRunner);
      expect(beginsAndEnds(sqlLog)).toEqual(['BEGIN', 'ROLLBACK', 'BEGIN', 'COMMIT']);
      expect(hooksRun).toEqual([2]);
      expect(rolledBackHooks).toBe(1);
      // The interferer's +100, then our +1 on top of what it committed.
      expect(await counterValue()).toBe(101);
      const warnings = nestLog.warnings();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^nightly-increment: attempt 1 of 3 failed \(/);
      expect(warnings[0]).toContain(engine.name === 'postgres' ? '[40001]' : '[ER_LOCK_DEADLOCK]');
    });
  });

  describe('when every attempt fails', () => {
    it("surfaces the last attempt's driver error once the attempts run out", async () => {
      const thrown: unknown[] = [];
      let hookRuns = 0;

      const run = runner.run(
        async (tx) => {
          host.afterCommit(() => void (hookRuns += 1));
          const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
          await collide(() =>
            tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 }).catch((error: unknown) => {
              thrown.push(error);
              throw error;
            }),
          );
        },
        { name: 'doomed-increment', isolationLevel: 'SERIALIZABLE', retry: { attempts: 2, baseDelayMs: 5 } },
      );
      const error = await run.then(
        () => undefined,
        (reason: unknown) => reason,
      );

      expect(thrown).toHaveLength(2);
      expect(error).toBeInstanceOf(QueryFailedError);
      expect(error).toBe(thrown[1]);
      expect(retryableCode(error)).toBe(collisionCode);
      expect(hookRuns).toBe(0);
      expect(nestLog.warnings()).toHaveLength(1);
      expect(nestLog.warnings()[0]).toMatch(/^doomed-increment: attempt 1 of 2 failed/);
      // Two interfering +100s; ours never committed.
      expect(await counterValue()).toBe(200);
    });
  });

  describe('when the run joins an outer unit of work', () => {
    it('does not retry: the error propagates out of the inner and the outer run after one attempt', async () => {
      let outerCalls = 0;
      let innerCalls = 0;

      const error = await runner
        .run(
          async () => {
            outerCalls += 1;
            await runner.run(
              async (tx) => {
                innerCalls += 1;
                const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
                await collide(() => tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 }));
              },
              { retry: { attempts: 5, baseDelayMs: 5 } },
            );
          },
          { name: 'outer', isolationLevel: 'SERIALIZABLE' },
        )
        .then(
          () => undefined,
          (reason: unknown) => reason,
        );

      expect(retryableCode(error)).toBe(collisionCode);
      expect(outerCalls).toBe(1);
      expect(innerCalls).toBe(1);
      expect(nestLog.warnings()).toEqual([]);
      expect(await counterValue()).toBe(100);
    });

    it('leaves the retry to the outer run, which owns the transaction', async () => {
      let outerCalls = 0;
      let innerCalls = 0;

      await runner.run(
        async () => {
          outerCalls += 1;
          await runner.run(
            async (tx) => {
              innerCalls += 1;
              const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
              const write = () => tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 });
              if (innerCalls === 1) await collide(write);
              else await write();
            },
            { retry: { attempts: 5, baseDelayMs: 5 } },
          );
        },
        { name: 'outer', isolationLevel: 'SERIALIZABLE', retry: { attempts: 2, baseDelayMs: 5 } },
      );

      expect(outerCalls).toBe(2);
      expect(innerCalls).toBe(2);
      expect(nestLog.warnings()).toHaveLength(1);
      expect(nestLog.warnings()[0]).toMatch(/^outer: attempt 1 of 2 failed/);
      expect(await counterValue()).toBe(101);
    });
  });

  describe('when the work fails for another reason', () => {
    it('does not retry a plain Error thrown by the work', async () => {
      let calls = 0;
      const boom = new Error('boom');

      const run = runner.run(
        async (tx) => {
          calls += 1;
          await tx.findOneByOrFail(Account, { id: COUNTER });
          throw boom;
        },
        { retry: { attempts: 5, baseDelayMs: 5 } },
      );

      await expect(run).rejects.toBe(boom);
      expect(calls).toBe(1);
      expect(nestLog.warnings()).toEqual([]);
    });

    it('does not retry a database error other than a deadlock or serialization failure', async () => {
      let calls = 0;

      const error = await runner
        .run(
          async (tx) => {
            calls += 1;
            await tx.insert(Account, { id: COUNTER, balance: 7 });
          },
          { isolationLevel: 'SERIALIZABLE', retry: { attempts: 5, baseDelayMs: 5 } },
        )
        .then(
          () => undefined,
          (reason: unknown) => reason,
        );

      expect(error).toBeInstanceOf(QueryFailedError);
      const driver = (error as { driverError: { code?: string } }).driverError;
      expect(driver.code).toBe(engine.name === 'postgres' ? '23505' : 'ER_DUP_ENTRY');
      expect(calls).toBe(1);
      expect(nestLog.warnings()).toEqual([]);
      expect(await counterValue()).toBe(0);
    });
  });

  describe('on an HTTP route with @Transactional({ isolationLevel: SERIALIZABLE, retry })', () => {
    it('answers 20 concurrent increments with 2xx, re-invoking the handler after collisions, and the total is exact', async () => {
      const REQUESTS = 20;
      contention = new Contention(POOL_SIZE);

      const statuses = await Promise.all(
        Array.from({ length: REQUESTS }, async () => {
          const response = await fetch(`${testApp.url}/counter/increment`, { method: 'POST' });
          await response.arrayBuffer();
          return response.status;
        }),
      );

      expect(statuses).toEqual(Array.from({ length: REQUESTS }, () => 201));
      expect(await counterValue()).toBe(REQUESTS);
      expect(contention.invocations).toBeGreaterThan(REQUESTS);
      const warnings = nestLog.warnings();
      expect(warnings).toHaveLength(contention.invocations - REQUESTS);
      for (const warning of warnings) expect(warning).toMatch(/^POST \/counter\/increment: attempt \d+ of 10 failed/);
    });

    describe('when the client disconnects while a retry waits for its backoff', () => {
      it('does not run the handler again, and surfaces the error of the last attempt', async () => {
        const backoffStarted = latch();
        const endBackoff = latch();
        mockBackoffGate = () => {
          backoffStarted.resolve();
          return endBackoff.promise;
        };
        const serverSawClose = latch();
        let handlerRuns = 0;
        probeRoute = async (request) => {
          handlerRuns += 1;
          // Registered after the interceptor's own listener: when this runs, the library knows.
          if (handlerRuns === 1) request.res!.once('close', () => serverSawClose.resolve());
          const tx = host.manager();
          const counter = await tx.findOneByOrFail(Account, { id: COUNTER });
          await collide(() => tx.update(Account, { id: COUNTER }, { balance: counter.balance + 1 }));
        };
        const client = new AbortController();

        const request = fetch(`${testApp.url}/counter/probe`, { method: 'POST', signal: client.signal }).then(
          () => 'answered',
          () => 'aborted',
        );
        try {
          await backoffStarted.promise;
          client.abort();
          expect(await request).toBe('aborted');
          await serverSawClose.promise;
        } finally {
          mockBackoffGate = undefined;
          endBackoff.resolve();
        }

        // The library is done with the request once Nest's exception handling got the error it surfaced:
        // the client is gone, so a 499 (not a logged server error) carrying the last attempt's error.
        const surfaced = await waitFor(() => surfacedErrors.find((error) => error instanceof HttpException) ?? false);
        expect(handlerRuns).toBe(1);
        expect(surfaced.getStatus()).toBe(499);
        expect(retryableCode(surfaced.cause)).toBe(collisionCode);
        expect(nestLog.entries.filter((entry) => entry.context === 'ExceptionsHandler')).toEqual([]);
        expect(nestLog.warnings()).toHaveLength(1);
        // Only the interferer's +100: the request never committed.
        expect(await counterValue()).toBe(100);
      });
    });
  });
});

describe('retry options', () => {
  it('rejects @Transactional({ retry: { attempts: 0 } }) where the route is declared', () => {
    const declare = () => {
      class Routes {
        @Transactional({ retry: { attempts: 0 } })
        handler(): void {}
      }
      return Routes;
    };

    expect(declare).toThrow(TransactionalOptionsError);
    expect(declare).toThrow(/@Transactional\(\): retry\.attempts must be a whole number of at least 1, got 0/);
  });

  describe.each([
    {
      how: 'forRoot({ retry: true })',
      module: () => TransactionalModule.forRoot({ retry: true } as unknown as TransactionalModuleOptions),
    },
    {
      how: 'forRootAsync(() => ({ retry: true }))',
      module: () =>
        TransactionalModule.forRootAsync({
          useFactory: () => ({ retry: true }) as unknown as TransactionalModuleOptions,
        }),
    },
  ])('given TransactionalModule.$how', ({ module }) => {
    const bootstrapName = 'retry-e2e-bootstrap';
    let created: DataSource[] = [];
    const db = suiteObserver('postgres');

    afterEach(async () => {
      // Nest does not close providers when compile() fails: destroy the data source it created.
      for (const source of created) if (source.isInitialized) await source.destroy();
      created = [];
      await waitFor(async () => expect(await db.backends(bootstrapName)).toEqual([]));
    });

    it('fails at bootstrap with TransactionalOptionsError saying retry is set per route or per run', async () => {
      // A static forRoot() checks its options when called; an async one when its factory has run.
      const bootstrap = Promise.resolve().then(() =>
        Test.createTestingModule({
          imports: [
            TypeOrmModule.forRootAsync({
              useFactory: () =>
                typeormOptions(postgresEngine, { poolSize: 1, applicationName: bootstrapName, entities: [Account] }),
              dataSourceFactory: async (options?: DataSourceOptions) => {
                const source = new DataSource(options!);
                created.push(source);
                return source.initialize();
              },
            }),
            module(),
          ],
        }).compile(),
      );

      const error = await bootstrap.then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(TransactionalOptionsError);
      expect((error as Error).message).toMatch(
        /retry is set where a unit of work can be run again: @Transactional\(\{ retry \}\) on a route, or TransactionRunner\.run\(fn, \{ retry \}\)/,
      );
    });
  });
});
