/**
 * The HTTP request lifecycle: lazy BEGIN, commit before the response, rollback on error, a COMMIT
 * that fails, Observable handlers and @Sse() routes; on PostgreSQL and MariaDB, over Express and
 * Fastify, with a pool of one connection. Database state is read through a separate connection.
 *
 * A COMMIT that fails:
 * - PostgreSQL: a UNIQUE constraint declared DEFERRABLE INITIALLY DEFERRED (created with raw SQL in
 *   beforeAll) that the handler violates; every statement succeeds and the error appears at COMMIT.
 * - MariaDB has no deferred constraints: InnoDB checks UNIQUE, FOREIGN KEY and CHECK at each statement.
 *   Its other commit-time errors need a binary log or Galera, which this server runs without
 *   (log_bin=0, no wsrep). The real way a MariaDB commit fails here is a transaction the server ended
 *   before COMMIT: the route's `timeoutMs` sets `idle_transaction_timeout`, the handler idles past it,
 *   the server closes the connection and rolls the transaction back, and the commit the handler's
 *   return asks for cannot happen (the library sees the connection is gone and reports a
 *   TransactionTimeoutError). That test runs on both databases (PostgreSQL:
 *   `idle_in_transaction_session_timeout`); the deferred-constraint test is PostgreSQL-only.
 */
import {
  type ArgumentsHost,
  Body,
  Catch,
  ConflictException,
  Controller,
  Get,
  Injectable,
  type MessageEvent,
  Post,
  Res,
  Sse,
  UseFilters,
} from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost } from '@nestjs/core';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import type { ServerResponse } from 'node:http';
import { concatMap, from, Observable, of } from 'rxjs';
import { type EntityManager, type Repository } from 'typeorm';
import {
  NoTransactionError,
  Transactional,
  TransactionalModule,
  TransactionHost,
  TransactionTimeoutError,
  Tx,
  type UnitOfWorkInfo,
} from '../../lib/index';
import { ConnectionAudit } from '../../lib/testing/index';
import { adapters } from '../support/app';
import { armCommitGate, CommitGate, commitGate } from '../support/commit-gate';
import { connectionIdOf, INNODB_TRX_POLL, inTransaction } from '../support/connections';
import { engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { post } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { poolStats } from '../support/leaks';
import { waitFor } from '../support/observer';
import { within } from '../support/outcomes';
import { beginStatement, RecordingSqlLogger, statementKind } from '../support/recording-loggers';
import { rowsWhere } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const ITEMS = tableOf(Item);

/** Not an entity: created with raw SQL, for its deferred constraint (PostgreSQL only). */
const DEFERRED_TABLE = 'lifecycle_deferred';

/** What the handlers report to the test, and the latches the test holds them with. */
@Injectable()
class Probe {
  engine: 'postgres' | 'mariadb' = 'postgres';
  /** Resolved by a latched handler once it wrote, with its connection's server-side id. */
  entered: Latch<number> = latch();
  /** Resolved by the test to let a latched handler return. */
  release: Latch = latch();
  handlerReturned = false;
  /** The raw HTTP response of the last /items/raw request. */
  response?: ServerResponse;
  sseHandlerUnit: UnitOfWorkInfo | undefined | 'not run' = 'not run';
  sseStreamUnits: Array<UnitOfWorkInfo | undefined> = [];
  caught: unknown;

  reset(): void {
    this.release.resolve();
    this.entered = latch();
    this.release = latch();
    this.handlerReturned = false;
    this.response = undefined;
    this.sseHandlerUnit = 'not run';
    this.sseStreamUnits = [];
    this.caught = undefined;
  }
}

/** Records the error a route failed with, then answers as Nest's default handler does. */
@Catch()
@Injectable()
class RecordingFilter extends BaseExceptionFilter {
  constructor(
    private readonly probe: Probe,
    adapterHost: HttpAdapterHost,
  ) {
    super(adapterHost.httpAdapter);
  }

  override catch(error: unknown, host: ArgumentsHost): void {
    this.probe.caught = error;
    super.catch(error, host);
  }
}

@Controller('items')
class ItemsController {
  constructor(
    private readonly probe: Probe,
    private readonly host: TransactionHost,
    @InjectRepository(Item) private readonly plainItems: Repository<Item>,
  ) {}

  @Post()
  async create(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(Item, { label: body.label });
    return { label: body.label };
  }

  /** A simple write that lets the test look at its raw HTTP response. */
  @Post('raw')
  async raw(
    @Body() body: { label: string },
    @Tx() tx: EntityManager,
    @Res({ passthrough: true }) reply: ServerResponse | { raw: ServerResponse },
  ): Promise<{ label: string }> {
    this.probe.response = 'raw' in reply ? reply.raw : reply;
    await tx.insert(Item, { label: body.label });
    this.probe.handlerReturned = true;
    return { label: body.label };
  }

  @Post('latched')
  async latched(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(Item, { label: body.label });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await this.probe.release.promise;
    this.probe.handlerReturned = true;
    return { label: body.label };
  }

  @Post('throws')
  async throws(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<never> {
    await tx.insert(Item, { label: body.label });
    throw new Error('the handler failed after its write');
  }

  @Post('conflict')
  async conflict(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<never> {
    await tx.insert(Item, { label: body.label });
    throw new ConflictException(`${body.label} is taken`);
  }

  /** Every statement succeeds; the duplicate code breaks a deferred constraint, checked at COMMIT. */
  @Post('deferred-violation')
  async deferredViolation(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(Item, { label: body.label });
    await tx.query(`INSERT INTO ${DEFERRED_TABLE} (code) VALUES (7)`);
    await tx.query(`INSERT INTO ${DEFERRED_TABLE} (code) VALUES (7)`);
    this.probe.handlerReturned = true;
    return { label: body.label };
  }

  /** Writes, then idles (on the latch) past the idle-transaction timeout the route sets. */
  @Post('idles-past-timeout')
  @Transactional({ timeoutMs: 1000 })
  @UseFilters(RecordingFilter)
  async idlesPastTimeout(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(Item, { label: body.label });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await this.probe.release.promise;
    this.probe.handlerReturned = true;
    return { label: body.label };
  }

  @Get('untouched')
  untouched(): { unitOfWork: UnitOfWorkInfo | null } {
    return { unitOfWork: this.host.current() ?? null };
  }

  @Get('tx-unused')
  txUnused(@Tx() tx: EntityManager): { unitOfWork: UnitOfWorkInfo | null; manager: boolean } {
    return { unitOfWork: this.host.current() ?? null, manager: typeof tx.query === 'function' };
  }

  /** Emits one value per label, each after its INSERT on the request's transaction. */
  @Post('observable')
  observable(@Body() body: { labels: string[] }, @Tx() tx: EntityManager): Observable<{ label: string; written: number }> {
    return from(body.labels).pipe(
      concatMap(async (label, index) => {
        await tx.insert(Item, { label });
        return { label, written: index + 1 };
      }),
    );
  }

  /** Emits after each INSERT, then errors with a 409. */
  @Post('observable-fails')
  observableFails(@Body() body: { labels: string[] }, @Tx() tx: EntityManager): Observable<string> {
    return new Observable<string>((subscriber) => {
      void (async () => {
        for (const label of body.labels) {
          await tx.insert(Item, { label });
          subscriber.next(label);
        }
        subscriber.error(new ConflictException('the stream failed after its writes'));
      })().catch((error: unknown) => subscriber.error(error));
    });
  }

  /** A stream: no unit of work, so queries go through a plain repository, one pooled connection each. */
  @Sse('events')
  events(): Observable<MessageEvent> {
    this.probe.sseHandlerUnit = this.host.current();
    return from([1, 2, 3]).pipe(
      concatMap(async (n) => {
        const count = await this.plainItems.count();
        this.probe.sseStreamUnits.push(this.host.current());
        return { data: { n, count } };
      }),
    );
  }

  @Sse('events-with-tx')
  @UseFilters(RecordingFilter)
  eventsWithTx(@Tx() _tx: EntityManager): Observable<MessageEvent> {
    return of({ data: 'the handler ran' });
  }
}

/** The `data:` payloads of a server-sent-events body. */
function sseData(body: string): unknown[] {
  return body
    .split('\n')
    .filter((line) => line.startsWith('data:'))
    .map((line) => JSON.parse(line.slice('data:'.length).trim()) as unknown);
}

describe.each(engines)('the request lifecycle on $name', (engine) => {
  const db = suiteObserver(engine);

  beforeAll(async () => {
    if (engine.name === 'postgres') {
      await db.query(
        `CREATE TABLE IF NOT EXISTS ${DEFERRED_TABLE} (
           code int NOT NULL,
           CONSTRAINT ${DEFERRED_TABLE}_code_key UNIQUE (code) DEFERRABLE INITIALLY DEFERRED
         )`,
      );
      await db.query(`DELETE FROM ${DEFERRED_TABLE}`);
    }
  });

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `lifecycle-e2e-${adapter}`;
    const sqlLog = new RecordingSqlLogger();
    let probe: Probe;

    // Before the suite's leak check (hooks run in the order they are declared): no handler, no COMMIT stays held.
    afterEach(() => {
      probe.release.resolve();
      commitGate.armed = false;
      commitGate.release.resolve();
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      leakCheck: { mariadb: 'app-connections' },
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot({
            ...typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item], logger: sqlLog }),
            subscribers: [CommitGate],
          }),
          TypeOrmModule.forFeature([Item]),
          TransactionalModule.forRoot(),
        ],
        controllers: [ItemsController],
        providers: [Probe, RecordingFilter],
      }),
    });

    beforeAll(() => {
      probe = testApp.get(Probe);
      probe.engine = engine.name;
    });

    beforeEach(() => {
      sqlLog.clear();
    });

    afterEach(async () => {
      probe.reset();
      if (engine.name === 'postgres') await db.query(`DELETE FROM ${DEFERRED_TABLE}`);
    });

    describe('when the handler succeeds', () => {
      it('keeps the write invisible to other connections while the handler runs and visible once the 2xx arrives', async () => {
        const label = `visible-after-${adapter}`;
        const response = post(`${testApp.url}/items/latched`, { label });
        const connectionId = await within(probe.entered.promise, 'the handler reaching its latch');

        // The INSERT ran inside the request's open transaction: another connection does not see it.
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        await waitFor(async () => expect(await inTransaction(db, connectionId)).toBe(true), INNODB_TRX_POLL);

        probe.release.resolve();
        const answered = await response;

        expect(answered.status).toBe(201);
        expect(await answered.json()).toEqual({ label });
        // Read after the response arrived: the COMMIT came before it.
        expect(await rowsWhere(db, ITEMS, 'label', label)).toHaveLength(1);
      });

      it('writes no response before COMMIT: while COMMIT is held the handler has returned but nothing is sent', async () => {
        const label = `held-commit-${adapter}`;
        armCommitGate();
        let answered = false;
        const response = post(`${testApp.url}/items/raw`, { label }).then((r) => {
          answered = true;
          return r;
        });
        await within(commitGate.reached.promise, 'the COMMIT of the request');

        // The handler returned its value; COMMIT is about to go out. A round trip to the database later,
        // the response is still unwritten (a response sent before COMMIT would be out by now).
        expect(probe.handlerReturned).toBe(true);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        expect(probe.response?.headersSent).toBe(false);
        expect(answered).toBe(false);

        commitGate.release.resolve();
        const answer = await response;

        expect(answer.status).toBe(201);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toHaveLength(1);
      });

      it(`sends exactly ${beginStatement(engine.name)}, INSERT, COMMIT for a simple write, on one query runner`, async () => {
        const label = `sql-order-${adapter}`;

        const response = await post(`${testApp.url}/items`, { label });

        expect(response.status).toBe(201);
        const statements = sqlLog.statements();
        expect(statements.map(statementKind)).toEqual([beginStatement(engine.name), 'INSERT', 'COMMIT']);
        expect(statements[0]).toBe(beginStatement(engine.name));
        expect(statements[2]).toBe('COMMIT');
        expect(new Set(sqlLog.entries.map((entry) => entry.queryRunner)).size).toBe(1);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toHaveLength(1);
      });
    });

    describe('when the handler throws', () => {
      it('rolls back and answers 500 for a plain Error, persisting nothing', async () => {
        const label = `plain-error-${adapter}`;

        const response = await post(`${testApp.url}/items/throws`, { label });

        expect(response.status).toBe(500);
        expect(sqlLog.transactionControl()).toEqual([beginStatement(engine.name), 'ROLLBACK']);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
      });

      it('rolls back and keeps the status of an HttpException (409), persisting nothing', async () => {
        const label = `conflict-${adapter}`;

        const response = await post(`${testApp.url}/items/conflict`, { label });

        expect(response.status).toBe(409);
        expect(await response.json()).toMatchObject({ statusCode: 409, message: `${label} is taken` });
        expect(sqlLog.transactionControl()).toEqual([beginStatement(engine.name), 'ROLLBACK']);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
      });
    });

    describe('when COMMIT fails', () => {
      // PostgreSQL only: MariaDB has no deferred constraints (see the header comment).
      if (engine.name === 'postgres') {
        it('answers 500 and persists nothing when a deferred constraint fails at COMMIT', async () => {
          const label = `deferred-${adapter}`;

          const response = await post(`${testApp.url}/items/deferred-violation`, { label });

          expect(response.status).toBe(500);
          // Every statement of the handler succeeded: the violation surfaced at COMMIT.
          expect(probe.handlerReturned).toBe(true);
          const failed = sqlLog.entries.filter((entry) => entry.error !== undefined);
          expect(failed.map((entry) => entry.sql)).toEqual(['COMMIT']);
          expect(failed[0].error).toMatch(/lifecycle_deferred_code_key/);
          expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
          expect(await db.query(`SELECT * FROM ${DEFERRED_TABLE}`)).toEqual([]);
        });
      }

      it('answers 500 and persists nothing when the database ended the idle transaction before COMMIT', async () => {
        const label = `idle-expired-${adapter}`;
        const response = post(`${testApp.url}/items/idles-past-timeout`, { label });
        const connectionId = await within(probe.entered.promise, 'the handler reaching its latch');

        // The server closes the connection that idled in its transaction longer than timeoutMs.
        await waitFor(async () => {
          const ids =
            db.engine === 'postgres'
              ? (await db.backends(applicationName)).map((backend) => backend.pid)
              : (await db.processlist()).map((process) => Number(process.id));
          expect(ids).not.toContain(connectionId);
        });
        probe.release.resolve();
        const answered = await response;

        expect(probe.handlerReturned).toBe(true);
        expect(answered.status).toBe(500);
        // The failure names its cause: the route's timeoutMs.
        expect(probe.caught).toBeInstanceOf(TransactionTimeoutError);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        // The pool of one still serves the next request.
        expect((await post(`${testApp.url}/items`, { label: `${label}-next` })).status).toBe(201);
        expect(await rowsWhere(db, ITEMS, 'label', `${label}-next`)).toHaveLength(1);
      });
    });

    describe('when the route never queries', () => {
      it('takes no connection and sends no BEGIN or COMMIT, though the route runs in a unit of work', async () => {
        const before = poolStats(testApp.dataSource);
        const audit = ConnectionAudit.attach(testApp.dataSource);
        try {
          const response = await fetch(`${testApp.url}/items/untouched`);

          expect(response.status).toBe(200);
          expect(await response.json()).toEqual({ unitOfWork: { name: 'GET /items/untouched', state: 'open' } });
          expect(audit.units()).toEqual([]);
        } finally {
          audit.detach();
        }
        expect(sqlLog.statements()).toEqual([]);
        expect(poolStats(testApp.dataSource).total).toBe(before.total);
      });

      it('takes no connection and sends no BEGIN for a route that injects @Tx() but never queries', async () => {
        const before = poolStats(testApp.dataSource);
        const audit = ConnectionAudit.attach(testApp.dataSource);
        try {
          const response = await fetch(`${testApp.url}/items/tx-unused`);

          expect(response.status).toBe(200);
          expect(await response.json()).toEqual({
            unitOfWork: { name: 'GET /items/tx-unused', state: 'open' },
            manager: true,
          });
          expect(audit.units()).toEqual([]);
        } finally {
          audit.detach();
        }
        expect(sqlLog.statements()).toEqual([]);
        expect(poolStats(testApp.dataSource).total).toBe(before.total);
      });
    });

    describe('when the handler returns an Observable', () => {
      it('commits once the Observable completes and answers with its last value', async () => {
        const labels = ['first', 'second', 'third'].map((n) => `${n}-${adapter}`);

        const response = await post(`${testApp.url}/items/observable`, { labels });

        expect(response.status).toBe(201);
        expect(await response.json()).toEqual({ label: labels[2], written: 3 });
        expect(sqlLog.statements().map(statementKind)).toEqual([
          beginStatement(engine.name),
          'INSERT',
          'INSERT',
          'INSERT',
          'COMMIT',
        ]);
        for (const label of labels) expect(await rowsWhere(db, ITEMS, 'label', label)).toHaveLength(1);
      });

      it('rolls back every write of an Observable that errors after emitting, keeping its status', async () => {
        const labels = ['first', 'second'].map((n) => `failing-${n}-${adapter}`);

        const response = await post(`${testApp.url}/items/observable-fails`, { labels });

        expect(response.status).toBe(409);
        expect(sqlLog.transactionControl()).toEqual([beginStatement(engine.name), 'ROLLBACK']);
        for (const label of labels) expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
      });
    });

    describe('on an @Sse() route', () => {
      it('passes through with no unit of work (TransactionHost.current() is undefined in the handler and the stream, no BEGIN) and delivers the events', async () => {
        await post(`${testApp.url}/items`, { label: `sse-seed-${adapter}` });
        sqlLog.clear();

        const response = await fetch(`${testApp.url}/items/events`);
        const body = await response.text();

        expect(response.status).toBe(200);
        expect(response.headers.get('content-type')).toMatch(/text\/event-stream/);
        expect(sseData(body)).toEqual([
          { n: 1, count: 1 },
          { n: 2, count: 1 },
          { n: 3, count: 1 },
        ]);
        expect(probe.sseHandlerUnit).toBeUndefined();
        expect(probe.sseStreamUnits).toEqual([undefined, undefined, undefined]);
        expect(sqlLog.transactionControl()).toEqual([]);
      });

      it('fails @Tx() on an @Sse() route with NoTransactionError: there is no unit of work to give', async () => {
        const response = await fetch(`${testApp.url}/items/events-with-tx`);

        expect(response.status).toBe(500);
        expect(probe.caught).toBeInstanceOf(NoTransactionError);
        expect(sqlLog.statements()).toEqual([]);
      });
    });
  });
});
