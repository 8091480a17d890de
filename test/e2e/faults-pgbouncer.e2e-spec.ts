/**
 * Through PgBouncer in transaction-pooling mode with ONE server connection: every transaction of every
 * client runs on that one server session, one after the other, so any state a unit of work left on
 * the session would reach the next one. Dozens of requests at once, from an app pool of four client
 * connections, alternate between a plain route and a route with timeoutMs, SERIALIZABLE and readOnly:
 * each sees only its own settings (the library sets them with BEGIN … and SET LOCAL, which end with
 * the transaction), nothing leaks, and all of them ran on the same server backend. (The whole
 * PostgreSQL side of the end-to-end suites also runs through PgBouncer: `jest.pgbouncer.config.ts`.)
 */
import { Controller, Get, Param } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { type EntityManager } from 'typeorm';
import { Transactional, TransactionalModule, TransactionHost, Tx } from '../../lib/index';
import { postgresEngine, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { ErrorBodyFilter } from '../support/error-body-filter';
import { call } from '../support/http';
import { expectNothingLeaked } from '../support/leaks';
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer';
import { describePgBouncer } from '../support/pgbouncer-suites';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);
const REQUESTS = 32;
/**
 * timeoutMs of the limited route: shorter than the plain route's statement. It also ends a transaction
 * idle for longer: shorter still, a pause of the test process on a busy machine between the library's
 * SET LOCAL and the handler's query would end the limited transaction for the wrong reason.
 */
const TIMEOUT_MS = 400;
/** Jest timeout of the interleaved run: the plain statements take turns on one server connection. */
const RUN_TIMEOUT_MS = 120_000;

interface Session {
  pid: number;
  statementTimeout: string;
  idleTimeout: string;
  isolation: string;
  readOnly: string;
}

async function session(tx: EntityManager): Promise<Session> {
  const [row] = await tx.query<Session[]>(
    `SELECT pg_backend_pid() AS pid,
            current_setting('statement_timeout') AS "statementTimeout",
            current_setting('idle_in_transaction_session_timeout') AS "idleTimeout",
            current_setting('transaction_isolation') AS isolation,
            current_setting('transaction_read_only') AS "readOnly"`,
  );
  return row;
}

@Controller('bounced')
class BouncedController {
  /** Writes, and runs a statement longer than the other route's timeoutMs. */
  @Get('plain/:label')
  async plain(@Param('label') label: string, @Tx() tx: EntityManager): Promise<Session> {
    await tx.insert(Item, { label });
    await tx.query(`SELECT pg_sleep(${(TIMEOUT_MS * 1.5) / 1000})`);
    return session(tx);
  }

  @Get('limited')
  @Transactional({ timeoutMs: TIMEOUT_MS, isolationLevel: 'SERIALIZABLE', readOnly: true })
  async limited(@Tx() tx: EntityManager): Promise<Session> {
    return session(tx);
  }
}

describePgBouncer('through PgBouncer in transaction-pooling mode, with one server connection', () => {
  const applicationName = 'faults-pgbouncer';
  const database = new URL(postgresEngine.url).pathname.slice(1);
  const db = suiteObserver('postgres');
  let bouncer: PgBouncer;

  beforeAll(async () => {
    bouncer = await startPgBouncer({ upstreamUrl: postgresEngine.url, poolMode: 'transaction', poolSize: 1 });
  }, 30_000);

  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    // The test checks it itself, before it reads the pool's counters.
    leakCheck: false,
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(
            { name: 'postgres', type: 'postgres', url: bouncer.url(database) },
            {
              poolSize: 4,
              applicationName,
              entities: [Item],
              // pg-pool's acquisition timeout: four clients take turns on one server connection.
              extra: { connectionTimeoutMillis: 30_000 },
            },
          ),
        ),
        TransactionalModule.forRoot(),
      ],
      controllers: [BouncedController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    }),
  });

  // After the app's own afterAll: the app closes its connections to the bouncer first.
  afterAll(async () => {
    await bouncer?.stop();
  });

  it(
    `gives each of ${REQUESTS} interleaved requests its own settings, none left on the shared server session`,
    async () => {
      const answers = await Promise.all(
        Array.from({ length: REQUESTS }, (_, i) =>
          i % 2 === 0
            ? call<Session>('GET', `${testApp.url}/bounced/plain/p${i}`)
            : call<Session>('GET', `${testApp.url}/bounced/limited`),
        ),
      );

      const plain = answers.filter((_, i) => i % 2 === 0);
      const limited = answers.filter((_, i) => i % 2 === 1);
      expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
      // The plain route: the server's defaults, though the session just ran a limited transaction.
      for (const { body } of plain) {
        expect(body).toMatchObject({ statementTimeout: '0', idleTimeout: '0', isolation: 'read committed', readOnly: 'off' });
      }
      for (const { body } of limited) {
        expect(body).toMatchObject({
          statementTimeout: `${TIMEOUT_MS}ms`,
          idleTimeout: `${TIMEOUT_MS}ms`,
          isolation: 'serializable',
          readOnly: 'on',
        });
      }
      // One server backend served them all.
      expect(new Set(answers.map((a) => a.body.pid)).size).toBe(1);
      const [{ count }] = await db.query<{ count: string }>(`SELECT COUNT(*) AS count FROM ${TABLE}`);
      expect(Number(count)).toBe(plain.length);
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect(testApp.get(TransactionHost).stats()).toMatchObject({ openUnitsOfWork: 0, connectionsHeld: 0 });
    },
    RUN_TIMEOUT_MS,
  );
});
