/**
 * The database goes away under load and comes back: a PostgreSQL server of this suite's own (embedded,
 * never the machine's) is stopped while 16 clients send transfers without pause, and started again;
 * then the network to it is cut (a TCP proxy that turns into a black hole) and restored. Requests
 * during an outage fail fast — refused connections at once, unanswered ones within the pool's
 * acquisition timeout (`connectTimeoutMS`) — with a `ConnectionAcquisitionError` (or, for those
 * caught mid-transaction, the lost connection said as such); no request hangs; the app serves again
 * by itself once the database is back; the books are exact (every 2xx recorded, no partial
 * transfer); and no connection leaked. Pool of 4.
 */
import { Body, Controller, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type EntityManager } from 'typeorm';
import { lockInOrder, TransactionalModule, TransactionHost, Tx } from '../../lib/index';
import { createApp, type TestApp } from '../support/app';
import type { Engine } from '../support/databases';
import type { EmbeddedPostgres } from '../support/embedded-postgres';
import { startEmbeddedPostgresProcess } from '../support/embedded-postgres-process';
import { Account, tableOf, Transfer } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { expectNothingLeaked } from '../support/leaks';
import { observer, waitFor } from '../support/observer';
import { runSeed, SEED_VARIABLE, seededRandom } from '../support/random';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy';

const CLIENTS = 16;
const POOL_SIZE = 4;
/** pg-pool's connectionTimeoutMillis: the TCP connect, and the wait for a pooled connection. */
const ACQUIRE_TIMEOUT_MS = 2000;
/** A request still unanswered after this long counts as hung: 30 times the acquisition timeout. */
const HUNG_MS = 30_000;
/** Outcomes of each phase the test waits for before it moves on. */
const PER_PHASE = 40;
/** How long the test waits for the outcomes of one phase: a bound for a failing run only, well above a busy machine's need. */
const PHASE_WAIT_MS = 60_000;
/** Jest timeout of one scenario: three phases, then the checks. */
const SCENARIO_TIMEOUT_MS = 5 * PHASE_WAIT_MS;
const SEED = runSeed();
const ACCOUNTS = 8;
const OPENING_BALANCE = 100_000;

const ACCOUNTS_TABLE = tableOf(Account);
const TRANSFERS_TABLE = tableOf(Transfer);

@Controller('transfers')
class TransfersController {
  @Post()
  async create(
    @Body() dto: { requestId: string; from: number; to: number; amount: number },
    @Tx() tx: EntityManager,
  ): Promise<{ requestId: string }> {
    await lockInOrder(tx, Account, [dto.from, dto.to]);
    await tx.query(`UPDATE ${ACCOUNTS_TABLE} SET balance = balance - $1 WHERE id = $2`, [dto.amount, dto.from]);
    await tx.query(`UPDATE ${ACCOUNTS_TABLE} SET balance = balance + $1 WHERE id = $2`, [dto.amount, dto.to]);
    await tx.insert(Transfer, { requestId: dto.requestId, fromId: dto.from, toId: dto.to, amount: dto.amount });
    return { requestId: dto.requestId };
  }
}

type Phase = 'up' | 'down' | 'back';

/** One request as its client saw it. */
interface Outcome {
  requestId: string;
  /** The phase when it was sent. */
  phase: Phase;
  status: number;
  body: ErrorBody | { requestId: string } | undefined;
  ms: number;
  /** Still unanswered after {@link HUNG_MS}. */
  hung: boolean;
}

/** Clients sending transfers back to back, each recording what it got, until stopped. */
class Load {
  readonly outcomes: Outcome[] = [];
  phase: Phase = 'up';
  private running = true;
  private sent = 0;
  private readonly workers: Array<Promise<void>>;

  constructor(
    private readonly url: string,
    private readonly tag: string,
  ) {
    this.workers = Array.from({ length: CLIENTS }, () => this.work());
  }

  count(phase: Phase, predicate: (o: Outcome) => boolean): number {
    return this.outcomes.filter((o) => o.phase === phase && predicate(o)).length;
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    while (this.running) this.outcomes.push(await this.send());
  }

  private async send(): Promise<Outcome> {
    const requestId = `${this.tag}-${this.sent++}`;
    const phase = this.phase;
    const random = seededRandom(`client ${requestId}`, SEED);
    const from = random.int(1, ACCOUNTS);
    const to = 1 + ((from + random.int(0, ACCOUNTS - 2)) % ACCOUNTS);
    const amount = random.int(1, 9);
    // Kept for the diagnosis of a failure; no assertion reads a clock.
    const started = Date.now();
    try {
      const response = await fetch(`${this.url}/transfers`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ requestId, from, to, amount }),
        signal: AbortSignal.timeout(HUNG_MS),
      });
      const text = await response.text();
      return {
        requestId,
        phase,
        status: response.status,
        body: text === '' ? undefined : (JSON.parse(text) as Outcome['body']),
        ms: Date.now() - started,
        hung: false,
      };
    } catch (error) {
      if ((error as Error).name !== 'TimeoutError') throw error;
      return { requestId, phase, status: 0, body: undefined, ms: Date.now() - started, hung: true };
    }
  }
}

/** The error classes a request may fail with while the database is away, and what each must say. */
const CLEAR_FAILURES: Record<string, RegExp> = {
  // No connection could be had: refused, reset, or not answered within the acquisition timeout.
  ConnectionAcquisitionError: /^POST \/transfers got no connection of data source 'default' after \d+ ms/,
  // Caught mid-transaction: the next statement of the handler, or its COMMIT; or handed out by the pool
  // already broken, before BEGIN.
  TransactionalError:
    /^The connection of POST \/transfers (was lost while its transaction was open|had broken before its transaction began)/,
  // Caught mid-statement: the server's own reason.
  QueryFailedError: /terminating connection due to administrator command|Connection terminated/,
};

/**
 * The requests sent while the database was away: each failed with a ConnectionAcquisitionError — the
 * wait for a connection ended by the acquisition timeout or by a refused connection, not by the client
 * giving up (see `hung`) — or (queued for a connection) was served once the database came back. The
 * outage lasted until {@link PER_PHASE} of them had failed. How many milliseconds each took is not
 * asserted: that measures the machine.
 */
function expectOutageOutcomes(load: Load): void {
  const down = load.outcomes.filter((o) => o.phase === 'down');
  const failed = down.filter((o) => o.status !== 201);
  expect(failed.length).toBeGreaterThanOrEqual(PER_PHASE);
  expect(failed.filter((o) => (o.body as ErrorBody | undefined)?.name !== 'ConnectionAcquisitionError')).toEqual([]);
  expect(down.filter((o) => o.hung)).toEqual([]);
}

/**
 * The most requests of `outcomes` in a row that succeeded. Once the database is back, a request may
 * still fail clearly while the pool sets up its connections again (on a busy machine that can take
 * longer than the acquisition timeout); serving again means a run of successes as long as there are
 * clients, every one of them with a connection.
 */
function longestSuccessRun(outcomes: Outcome[]): number {
  let longest = 0;
  let run = 0;
  for (const outcome of outcomes) {
    run = outcome.status === 201 ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

/** The app serves again: {@link PER_PHASE} successes since the database came back, {@link CLIENTS} of them in a row. */
function servesAgain(load: Load): boolean {
  const back = load.outcomes.filter((o) => o.phase === 'back');
  return back.filter((o) => o.status === 201).length >= PER_PHASE && longestSuccessRun(back) >= CLIENTS;
}

function unclear(outcomes: Outcome[]): Outcome[] {
  return outcomes.filter((o) => {
    if (o.status === 201) return false;
    const body = o.body as ErrorBody | undefined;
    const pattern = body === undefined ? undefined : CLEAR_FAILURES[body.name];
    return o.status !== 500 || pattern === undefined || !pattern.test(body?.message ?? '');
  });
}

describe(`when the database goes away under load and comes back (${SEED_VARIABLE}=${SEED})`, () => {
  let pg: EmbeddedPostgres;
  let engine: Engine<'postgres'>;

  beforeAll(async () => {
    pg = await startEmbeddedPostgresProcess();
    engine = { name: 'postgres', type: 'postgres', url: pg.url };
  }, 120_000);

  afterAll(async () => {
    await pg?.stop();
  });

  /** Starts the app on `url`, seeds the accounts, and hands back what the test needs. */
  async function start(url: string, applicationName: string) {
    const testApp = await createApp({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url,
          poolSize: POOL_SIZE,
          connectTimeoutMS: ACQUIRE_TIMEOUT_MS,
          applicationName,
          entities: [Account, Transfer],
          synchronize: true,
          retryAttempts: 0,
        }),
        TransactionalModule.forRoot(),
      ],
      controllers: [TransfersController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    });
    const db = await observer(engine);
    try {
      await db.query(`DELETE FROM ${TRANSFERS_TABLE}`);
      await db.query(`DELETE FROM ${ACCOUNTS_TABLE}`);
      const values = Array.from({ length: ACCOUNTS }, (_, i) => `(${i + 1}, ${OPENING_BALANCE})`).join(', ');
      await db.query(`INSERT INTO ${ACCOUNTS_TABLE} (id, balance) VALUES ${values}`);
    } finally {
      await db.close();
    }
    return { testApp, dataSource: testApp.app.get(DataSource), host: testApp.app.get(TransactionHost) };
  }

  /** The checks after an outage, through a fresh observer (the old one went down with the server). */
  async function expectExactBooksAndNoLeak(load: Load, dataSource: DataSource, host: TransactionHost, applicationName: string) {
    const db = await observer(engine);
    try {
      await expectNothingLeaked({ dataSource, db, applicationName });
      expect(host.stats()).toMatchObject({ openUnitsOfWork: 0, connectionsHeld: 0 });
      const transfers = await db.query<{ requestId: string; fromId: number; toId: number; amount: number }>(
        `SELECT "requestId", "fromId", "toId", amount FROM ${TRANSFERS_TABLE}`,
      );
      const accounts = await db.query<{ id: number; balance: number }>(`SELECT id, balance FROM ${ACCOUNTS_TABLE} ORDER BY id`);
      const expected = new Map(Array.from({ length: ACCOUNTS }, (_, i) => [i + 1, OPENING_BALANCE]));
      for (const t of transfers) {
        expected.set(t.fromId, (expected.get(t.fromId) as number) - t.amount);
        expected.set(t.toId, (expected.get(t.toId) as number) + t.amount);
      }
      expect(accounts).toEqual([...expected].map(([id, balance]) => ({ id, balance })));
      const recorded = new Set(transfers.map((t) => t.requestId));
      expect(load.outcomes.filter((o) => o.status === 201 && !recorded.has(o.requestId))).toEqual([]);
    } finally {
      await db.close();
    }
  }

  describe('when PostgreSQL is restarted', () => {
    const applicationName = 'faults-restart';
    let testApp: TestApp | undefined;

    afterAll(async () => {
      await testApp?.close();
    });

    it(
      'fails the requests of the outage fast and clearly, then serves again by itself, with exact books and no leak',
      async () => {
        const started = await start(engine.url, applicationName);
        testApp = started.testApp;
        const { dataSource, host } = started;
        const load = new Load(testApp.url, 'restart');
        try {
          await waitFor(() => load.count('up', (o) => o.status === 201) >= PER_PHASE, { timeoutMs: PHASE_WAIT_MS });

          await pg.halt();
          load.phase = 'down';
          await waitFor(() => load.count('down', (o) => o.status !== 201) >= PER_PHASE, { timeoutMs: PHASE_WAIT_MS });

          await pg.resume();
          load.phase = 'back';
          await waitFor(() => servesAgain(load), { timeoutMs: PHASE_WAIT_MS });
        } finally {
          await load.stop();
        }

        expect(load.outcomes.filter((o) => o.hung)).toEqual([]);
        // Sent while the server was down: refused, each a ConnectionAcquisitionError, within the
        // acquisition timeout; or, queued for a connection, served once the server was back within it.
        expectOutageOutcomes(load);
        // Every failure, whenever it came, says what happened.
        expect(unclear(load.outcomes)).toEqual([]);
        // Back: the app serves again by itself, with no restart (any failure on the way is a clear one, above).
        expect(servesAgain(load)).toBe(true);
        const failedAcquisitions = load.outcomes.filter(
          (o) => (o.body as ErrorBody | undefined)?.name === 'ConnectionAcquisitionError',
        );
        expect(host.stats().acquisitionFailures).toBe(failedAcquisitions.length);
        await expectExactBooksAndNoLeak(load, dataSource, host, applicationName);
      },
      SCENARIO_TIMEOUT_MS,
    );
  });

  describe('when the network to PostgreSQL goes silent', () => {
    const applicationName = 'faults-blackhole';
    let testApp: TestApp | undefined;
    let proxy: TcpProxy | undefined;

    afterAll(async () => {
      await testApp?.close();
      await proxy?.close();
    });

    it(
      'fails the requests within the acquisition timeout, saying the database did not answer, then serves again once the network is back',
      async () => {
        proxy = await startTcpProxy(pg.port);
        const url = new URL(engine.url);
        url.port = String(proxy.port);
        const started = await start(url.toString(), applicationName);
        testApp = started.testApp;
        const { dataSource, host } = started;
        const load = new Load(testApp.url, 'blackhole');
        try {
          await waitFor(() => load.count('up', (o) => o.status === 201) >= PER_PHASE, { timeoutMs: PHASE_WAIT_MS });

          proxy.blackhole();
          load.phase = 'down';
          await waitFor(() => load.count('down', (o) => o.status !== 201) >= PER_PHASE, { timeoutMs: PHASE_WAIT_MS });

          proxy.restore();
          load.phase = 'back';
          await waitFor(() => servesAgain(load), { timeoutMs: PHASE_WAIT_MS });
        } finally {
          await load.stop();
        }

        expect(load.outcomes.filter((o) => o.hung)).toEqual([]);
        // Nothing answers: no request waits much past the acquisition timeout.
        expectOutageOutcomes(load);
        const timedOut = load.outcomes.filter(
          (o) => o.phase === 'down' && /timeout/i.test((o.body as ErrorBody | undefined)?.message ?? ''),
        );
        expect(timedOut.length).toBeGreaterThan(0);
        expect(servesAgain(load)).toBe(true);
        await expectExactBooksAndNoLeak(load, dataSource, host, applicationName);
        // The diagnosis: the pool was not full of busy connections (the app held none of them: every
        // one was cut), the database did not answer new ones. Raising poolSize would not help.
        const blamesThePool = timedOut.filter((o) => /raise poolSize/.test((o.body as ErrorBody).message));
        expect(blamesThePool.map((o) => (o.body as ErrorBody).message)).toEqual([]);
      },
      SCENARIO_TIMEOUT_MS,
    );
  });
});
