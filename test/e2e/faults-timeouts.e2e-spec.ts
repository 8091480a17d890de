/**
 * Statements the database stops: the route's `timeoutMs` (statement timeout) and the database's own
 * lock wait timeout (PostgreSQL `lock_timeout`, set per transaction with SET LOCAL; MariaDB
 * `innodb_lock_wait_timeout`, set per statement with SET STATEMENT … FOR). The route-options suite
 * checks the error class of a timed-out statement; here, under a dozen requests at once on a pool of
 * two: every write the request made before the stopped statement is rolled back (MariaDB rolls back
 * only the statement that timed out on a lock, never the transaction), every connection goes back to
 * the pool clean, nothing waits forever on a lock, and the requests after succeed.
 */
import { Body, Controller, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { type EntityManager } from 'typeorm';
import { Transactional, TransactionalModule, TransactionHost, Tx } from '../../lib/index';
import { mariadbTransactionsOfApp } from '../support/app-connections';
import { engineNameOf, INNODB_TRX_POLL, sleepSql } from '../support/connections';
import { engines, QUEUED_ACQUIRE_TIMEOUT_MS, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { postJson, type Reply } from '../support/http';
import { waitFor } from '../support/observer';
import { placeholder } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);
/** The row another connection keeps locked; far above the ids the app's inserts get (a PostgreSQL sequence skips no explicit id). */
const LOCKED_ID = 1_000_000;
/** Requests sent at once; the pool has two connections. */
const AT_ONCE = 12;
const POOL_SIZE = 2;
/**
 * The route's timeoutMs. It also ends a transaction idle for longer (PostgreSQL
 * idle_in_transaction_session_timeout; MariaDB rounds it up to whole seconds): shorter, it could end
 * one between the handler's INSERT and its slow statement when a busy machine pauses the test process,
 * and fail the request for the wrong reason.
 */
const TIMEOUT_MS = 1000;
/** PostgreSQL lock_timeout; MariaDB's innodb_lock_wait_timeout counts whole seconds, 1 at least. */
const LOCK_TIMEOUT_MS = { postgres: 200, mariadb: 1000 } as const;
/** Jest timeout of a test: two dozen requests take turns on two connections, each for up to a second. */
const TEST_TIMEOUT_MS = 2 * QUEUED_ACQUIRE_TIMEOUT_MS;

/** `SELECT … FOR UPDATE` of the locked row, by primary key (a record lock only, no gap lock). */
function lockLockedRow(): string {
  return `SELECT id FROM ${TABLE} WHERE id = ${LOCKED_ID} FOR UPDATE`;
}

@Controller('timeouts')
class TimeoutsController {
  /** Writes, then runs a statement far longer than timeoutMs. */
  @Post('slow-statement')
  @Transactional({ timeoutMs: TIMEOUT_MS })
  async slowStatement(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.insert(Item, { label: body.label });
    await tx.query(sleepSql(engineNameOf(tx), 10));
    return { label: body.label };
  }

  /** Writes, then waits for the locked row, longer than timeoutMs. */
  @Post('statement-timeout-on-lock')
  @Transactional({ timeoutMs: TIMEOUT_MS })
  async statementTimeoutOnLock(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.insert(Item, { label: body.label });
    await tx.query(lockLockedRow());
    return { label: body.label };
  }

  /** Writes, then waits for the locked row with the database's lock wait timeout; no timeoutMs. */
  @Post('lock-timeout')
  async lockTimeout(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    const engine = engineNameOf(tx);
    if (engine === 'postgres') await tx.query(`SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS.postgres}`);
    await tx.insert(Item, { label: body.label });
    await tx.query(
      engine === 'postgres'
        ? lockLockedRow()
        : `SET STATEMENT innodb_lock_wait_timeout = ${LOCK_TIMEOUT_MS.mariadb / 1000} FOR ${lockLockedRow()}`,
    );
    return { label: body.label };
  }

  /** Writes, then locks the row (now free) and reports the timeouts its transaction runs with. */
  @Post('plain')
  async plain(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    const engine = engineNameOf(tx);
    await tx.insert(Item, { label: body.label });
    await tx.query(lockLockedRow());
    const [settings] = await tx.query<Array<{ lock: unknown; statement: unknown }>>(
      engine === 'postgres'
        ? `SELECT current_setting('lock_timeout') AS "lock", current_setting('statement_timeout') AS "statement"`
        : 'SELECT @@SESSION.innodb_lock_wait_timeout AS `lock`, @@SESSION.max_statement_time AS `statement`',
    );
    return { lock: String(settings.lock), statement: Number(settings.statement) };
  }
}

describe.each(engines)('when the database stops a statement, on $name', (engine) => {
  const applicationName = `faults-timeouts-${engine.name}`;
  const lockWaitError = engine.name === 'postgres' ? { code: '55P03' } : { errno: 1205 };
  const statementTimeoutCause = engine.name === 'postgres' ? { code: '57014' } : { errno: 1969 };
  const db = suiteObserver(engine);
  /** Another connection, that takes the row lock the requests wait for. */
  const lockHolder = suiteObserver(engine);

  afterEach(async () => {
    // Before the suite's cleanup: its DELETE would wait for the row lock.
    await lockHolder.query('ROLLBACK').catch(() => undefined);
  });

  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    leakCheck: { mariadb: 'app-connections' },
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(engine, {
            poolSize: POOL_SIZE,
            applicationName,
            entities: [Item],
            // A dozen requests queue for two connections, each held up to a second or more.
            acquireTimeoutMs: QUEUED_ACQUIRE_TIMEOUT_MS,
          }),
        ),
        TransactionalModule.forRoot(),
      ],
      controllers: [TimeoutsController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    }),
  });

  beforeEach(async () => {
    await db.query(`INSERT INTO ${TABLE} (id, label) VALUES (${LOCKED_ID}, 'held-row')`);
  });

  afterEach(() => {
    expect(testApp.get(TransactionHost).stats()).toMatchObject({ openUnitsOfWork: 0, connectionsHeld: 0 });
  });

  async function labels(prefix: string): Promise<string[]> {
    const rows = await db.query<{ label: string }>(
      `SELECT label FROM ${TABLE} WHERE label LIKE ${placeholder(engine.name, 1)} ORDER BY label`,
      [`${prefix}%`],
    );
    return rows.map((row) => row.label);
  }

  /** Sends {@link AT_ONCE} requests to `path` at once. */
  function sendAll(path: string, prefix: string): Promise<Array<Reply<ErrorBody>>> {
    return Promise.all(
      Array.from({ length: AT_ONCE }, (_, i) => postJson<ErrorBody>(`${testApp.url}${path}`, { label: `${prefix}-${i}` })),
    );
  }

  /** Another connection takes the row lock and keeps it until the test rolls it back. */
  async function holdTheLock(): Promise<void> {
    await lockHolder.query(engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
    await lockHolder.query(lockLockedRow());
  }

  /** The next requests find clean connections: no timeout left behind, the lock free again. */
  async function nextRequestsSucceed(prefix: string): Promise<void> {
    const answers = await sendAll('/timeouts/plain', `${prefix}-next`);
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 201));
    // The server's defaults, as a fresh session of the observer has them.
    const [defaults] = await db.query<{ lock: unknown }>(
      engine.name === 'postgres'
        ? `SELECT current_setting('lock_timeout') AS "lock"`
        : 'SELECT @@GLOBAL.innodb_lock_wait_timeout AS `lock`',
    );
    const clean = { lock: String(defaults.lock), statement: 0 };
    expect(answers.map((answer) => answer.body)).toEqual(answers.map(() => clean));
    expect(await labels(`${prefix}-next`)).toHaveLength(AT_ONCE);
  }

  describe('timeoutMs', () => {
    it(
      `stops each of ${AT_ONCE} slow statements, rolls back the write before it, and releases the connection`,
      async () => {
        const answers = await sendAll('/timeouts/slow-statement', 'slow');

        expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 500));
        // Each 10 s statement was stopped by the server's statement timeout (the cause says so), not run
        // to its end: no clock needed to tell.
        for (const { body } of answers) {
          expect(body).toMatchObject({
            name: 'TransactionTimeoutError',
            cause: { name: 'QueryFailedError', ...statementTimeoutCause },
          });
        }
        expect(await labels('slow')).toEqual([]);
        await nextRequestsSucceed('slow');
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'stops statements waiting on a lock another connection holds, and leaves that connection its lock',
      async () => {
        await holdTheLock();

        const answers = await sendAll('/timeouts/statement-timeout-on-lock', 'waits');

        expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 500));
        for (const { body } of answers) {
          expect(body).toMatchObject({
            name: 'TransactionTimeoutError',
            cause: { name: 'QueryFailedError', ...statementTimeoutCause },
          });
        }
        expect(await labels('waits')).toEqual([]);
        // The holder still has its transaction and its lock.
        const [row] = await lockHolder.query<{ label: string }>(`SELECT label FROM ${TABLE} WHERE id = ${LOCKED_ID}`);
        expect(row.label).toBe('held-row');
        await lockHolder.query('ROLLBACK');
        await nextRequestsSucceed('waits');
      },
      TEST_TIMEOUT_MS,
    );
  });

  describe(engine.name === 'postgres' ? 'lock_timeout' : 'innodb_lock_wait_timeout', () => {
    it(
      `fails each of ${AT_ONCE} lock waits with the database's lock timeout error, rolling back the whole transaction`,
      async () => {
        await holdTheLock();

        const answers = await sendAll('/timeouts/lock-timeout', 'lock');

        expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 500));
        for (const { body } of answers) {
          // The database's error as it is: the route set this timeout itself, not through timeoutMs.
          expect(body).toMatchObject({ name: 'QueryFailedError', ...lockWaitError });
        }
        // MariaDB undoes only the statement that timed out; the library must roll back the insert before it.
        expect(await labels('lock')).toEqual([]);
        await lockHolder.query('ROLLBACK');
        // No SET LOCAL lock_timeout (nor SET STATEMENT) outlives its transaction on the pooled connections.
        await nextRequestsSucceed('lock');
      },
      TEST_TIMEOUT_MS,
    );

    it(
      'lets a request through once the lock holder ends, while the others wait',
      async () => {
        await holdTheLock();
        const waiting = postJson<ErrorBody>(`${testApp.url}/timeouts/plain`, { label: 'after-holder' });
        // The app's request waits for the lock (no other client's wait counts: the server is shared).
        await waitFor(async () => {
          const waiting =
            db.engine === 'postgres'
              ? (await db.backends(applicationName)).filter((b) => b.waitEventType === 'Lock' && /FOR UPDATE/.test(b.query))
              : (await mariadbTransactionsOfApp(db, testApp.dataSource)).filter((t) => t.state === 'LOCK WAIT');
          expect(waiting).toHaveLength(1);
        }, INNODB_TRX_POLL);

        await lockHolder.query('ROLLBACK');

        expect((await waiting).status).toBe(201);
        expect(await labels('after-holder')).toEqual(['after-holder']);
      },
      TEST_TIMEOUT_MS,
    );
  });
});
