/**
 * Soak: 100,000 requests against a real app using the library, on PostgreSQL, with faults mixed in —
 * clients that disconnect at random moments, backends killed mid-transaction, statement timeouts,
 * handlers that fail after writing, deadlocks the route retries — then the audit: requests and
 * failures by kind, connections leaked (must be 0), transactions left open (must be 0), the books
 * (every balance equals its opening balance plus its recorded transfers), and heap growth of the app
 * process between a warm-up and the end (both after a forced GC).
 *
 *   npm run soak
 *   SOAK_REQUESTS=20000 SOAK_CONCURRENCY=32 SOAK_POOL=4 npm run soak
 *   TEST_SEED=123456 npm run soak      (the same random choices as the run that printed that seed)
 *
 * The app runs in a child process (the same file, argument `server`), so its heap is its own. The
 * database is `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/test); the script creates
 * and empties its own two tables there (soak_accounts, soak_transfers). Exit code 1 when anything
 * leaked, a request failed in a way its fault does not explain, the books are off, or the heap grew
 * more than SOAK_MAX_HEAP_GROWTH_MB (default 64).
 *
 * Every random choice (each request's kind, accounts, amount, when a client cuts) comes from one seed,
 * `TEST_SEED` or drawn and printed at the start and in the report; one stream per request, so the
 * order in which concurrent requests finish does not change them.
 */
import 'reflect-metadata';
import { fork } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import {
  type ArgumentsHost,
  Body,
  Catch,
  ConflictException,
  Controller,
  type ExceptionFilter,
  Get,
  HttpException,
  type INestApplication,
  Module,
  Post,
} from '@nestjs/common';
import { APP_FILTER, NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Client } from 'pg';
import { Column, Entity, type EntityManager, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { lockInOrder, NoTransaction, Transactional, TransactionalModule, TransactionHost, Tx } from '../lib/index';
import { type Random, runSeed, seededRandom, seedLine } from '../test/support/random';

const env = (name: string, fallback: number): number => {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : Number(value);
};

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const REQUESTS = env('SOAK_REQUESTS', 100_000);
const CONCURRENCY = env('SOAK_CONCURRENCY', 64);
const POOL_SIZE = env('SOAK_POOL', 8);
const WARM_UP = Math.min(5000, Math.floor(REQUESTS / 10));
const MAX_HEAP_GROWTH_MB = env('SOAK_MAX_HEAP_GROWTH_MB', 64);
const ACCOUNTS = 50;
const OPENING_BALANCE = 1_000_000;
const TIMEOUT_MS = 50;
const APPLICATION_NAME = 'soak';

// ---------------------------------------------------------------------------------------------
// The app

@Entity('soak_accounts')
class Account {
  @PrimaryColumn()
  id!: number;

  @Column({ type: 'int' })
  balance!: number;
}

@Entity('soak_transfers')
class Transfer {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'int' })
  fromId!: number;

  @Column({ type: 'int' })
  toId!: number;

  @Column({ type: 'int' })
  amount!: number;
}

interface TransferDto {
  from: number;
  to: number;
  amount: number;
}

/** Locks both accounts in id order (so transfers never deadlock one another), then moves the money. */
async function move(tx: EntityManager, dto: TransferDto): Promise<void> {
  await lockInOrder(tx, Account, [dto.from, dto.to]);
  await tx.query('UPDATE soak_accounts SET balance = balance - $1 WHERE id = $2', [dto.amount, dto.from]);
  await tx.query('UPDATE soak_accounts SET balance = balance + $1 WHERE id = $2', [dto.amount, dto.to]);
  await tx.insert(Transfer, { fromId: dto.from, toId: dto.to, amount: dto.amount });
}

/** A connection outside the app's pool, for the app to have its own backend killed. */
let killer: Client;

@Controller('soak')
class SoakController {
  constructor(private readonly host: TransactionHost) {}

  /** A transfer, rows locked in order; a turn of the event loop between statements so client cuts land mid-way. */
  @Post('transfer')
  async transfer(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
    await tx.query('SELECT 1');
    await new Promise((resolve) => setImmediate(resolve));
    await move(tx, dto);
    return { ok: true };
  }

  /** Writes, then fails: everything must roll back. */
  @Post('fails')
  async fails(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
    await move(tx, dto);
    throw new ConflictException('the handler failed after its writes');
  }

  /** Writes, then runs a statement longer than timeoutMs. */
  @Post('slow')
  @Transactional({ timeoutMs: TIMEOUT_MS })
  async slow(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
    await move(tx, dto);
    await tx.query(`SELECT pg_sleep(${(TIMEOUT_MS * 4) / 1000})`);
    return { ok: true };
  }

  /** Writes, then its backend is killed from outside, then writes again. */
  @Post('killed')
  async killed(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
    await move(tx, dto);
    const [{ pid }] = await tx.query<Array<{ pid: number }>>('SELECT pg_backend_pid() AS pid');
    await killer.query('SELECT pg_terminate_backend($1)', [pid]);
    // Until the app's connection has seen its end: the next statement must fail, not race the kill.
    for (let i = 0; i < 100; i++) {
      const { rows } = await killer.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
      if (rows.length === 0) break;
      await delay(5);
    }
    await delay(5);
    await move(tx, dto);
    return { ok: true };
  }

  /** Locks the two rows in the order given (not sorted): concurrent opposite transfers deadlock, and are retried. */
  @Post('deadlocky')
  @Transactional({ retry: { attempts: 8, baseDelayMs: 5, maxDelayMs: 100 } })
  async deadlocky(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
    await tx.query('SELECT id FROM soak_accounts WHERE id = $1 FOR UPDATE', [dto.from]);
    await new Promise((resolve) => setTimeout(resolve, 3));
    await tx.query('SELECT id FROM soak_accounts WHERE id = $1 FOR UPDATE', [dto.to]);
    // Both rows are locked already: lockInOrder in move() takes nothing new.
    await move(tx, dto);
    return { ok: true };
  }

  @Get('total')
  @Transactional({ readOnly: true, isolationLevel: 'REPEATABLE READ' })
  async total(@Tx() tx: EntityManager) {
    const [{ total }] = await tx.query<Array<{ total: number }>>('SELECT SUM(balance)::int AS total FROM soak_accounts');
    return { total };
  }

  /** For the driver of the soak: the library's counters, and the heap after a forced GC. */
  @Get('internal')
  @NoTransaction()
  internal() {
    (globalThis as { gc?: () => void }).gc?.();
    return { stats: this.host.stats(), heapUsed: process.memoryUsage().heapUsed };
  }
}

/** Answers every error with its class and message, so that an unexplained answer says what it was. */
@Catch()
class ErrorNameFilter implements ExceptionFilter {
  catch(error: unknown, host: ArgumentsHost): void {
    const status = error instanceof HttpException ? error.getStatus() : 500;
    const { name, message } = error instanceof Error ? error : { name: 'unknown', message: String(error) };
    const response = host.switchToHttp().getResponse<{ status(code: number): { json(body: unknown): void } }>();
    response.status(status).json({ statusCode: status, name, message });
  }
}

@Module({
  providers: [{ provide: APP_FILTER, useClass: ErrorNameFilter }],
  imports: [
    TypeOrmModule.forRoot({
      type: 'postgres',
      url: DATABASE_URL,
      poolSize: POOL_SIZE,
      connectTimeoutMS: 10_000,
      applicationName: APPLICATION_NAME,
      entities: [Account, Transfer],
      synchronize: true,
      retryAttempts: 0,
    }),
    TransactionalModule.forRoot({ guard: 'throw' }),
  ],
  controllers: [SoakController],
})
class SoakModule {}

async function serve(): Promise<void> {
  killer = new Client({ connectionString: DATABASE_URL, application_name: 'soak-killer' });
  await killer.connect();
  const app: INestApplication = await NestFactory.create(SoakModule, {
    // Every fault of the mix is logged as an error by Nest: the tallies say it shorter.
    logger: false,
    forceCloseConnections: true,
  });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as { port: number };
  process.send?.({ port });
  process.on('message', (message: string) => {
    if (message !== 'stop') return;
    void app
      .close()
      .then(() => killer.end())
      .finally(() => process.exit(0));
  });
}

// ---------------------------------------------------------------------------------------------
// The driver

type Kind = 'transfer' | 'abort' | 'fails' | 'slow' | 'killed' | 'deadlocky' | 'total';

/** Share of each kind of request, in percent. */
const MIX: Array<[Kind, number]> = [
  ['transfer', 60.5],
  ['abort', 20],
  ['fails', 5],
  ['slow', 2],
  ['killed', 0.5],
  ['deadlocky', 4],
  ['total', 8],
];
/** Accounts 1–4 are for the deadlock-prone route alone: the transfers of the others never wait on them. */
const DEADLOCK_ACCOUNTS = 4;

/** What each kind must answer: any other answer is an unexplained failure. */
const EXPECTED: Record<Kind, (status: number, body: string) => boolean> = {
  transfer: (status) => status === 201,
  abort: (status) => status === 201, // when the cut came after the answer
  fails: (status) => status === 409,
  slow: (status) => status === 500, // TransactionTimeoutError (Nest answers 500; the log says why)
  killed: (status) => status === 500,
  deadlocky: (status) => status === 201,
  total: (status, body) => status === 200 && body === JSON.stringify({ total: ACCOUNTS * OPENING_BALANCE }),
};

function pick(random: Random): Kind {
  let roll = random() * 100;
  for (const [kind, share] of MIX) {
    roll -= share;
    if (roll < 0) return kind;
  }
  return 'transfer';
}

interface Tally {
  sent: number;
  ok: number;
  cut: number;
  unexplained: number;
  samples: string[];
}

async function drive(): Promise<void> {
  const seed = runSeed();
  process.stdout.write(`${seedLine(seed)}\n`);
  const admin = new Client({ connectionString: DATABASE_URL, application_name: 'soak-admin' });
  await admin.connect();
  const child = fork(__filename, ['server'], { execArgv: process.execArgv, stdio: 'inherit' });
  const { port } = await new Promise<{ port: number }>((resolve, reject) => {
    child.once('message', (message) => resolve(message as { port: number }));
    child.once('exit', (code) => reject(new Error(`the app exited (${code}) before it listened`)));
  });
  const base = `http://127.0.0.1:${port}`;
  const internal = async () =>
    (await (await fetch(`${base}/soak/internal`)).json()) as {
      stats: ReturnType<TransactionHost['stats']>;
      heapUsed: number;
    };

  await admin.query('DELETE FROM soak_transfers');
  await admin.query('DELETE FROM soak_accounts');
  await admin.query(
    `INSERT INTO soak_accounts (id, balance) SELECT g, ${OPENING_BALANCE} FROM generate_series(1, ${ACCOUNTS}) g`,
  );

  const tallies = new Map<Kind, Tally>(MIX.map(([kind]) => [kind, { sent: 0, ok: 0, cut: 0, unexplained: 0, samples: [] }]));
  let next = 0;
  let heapAfterWarmUp = 0;
  let warmedUp: Promise<void> | undefined;
  const started = Date.now();
  let lastReport = started;

  async function one(index: number): Promise<void> {
    const random = seededRandom(`request ${index}`, seed);
    const kind = pick(random);
    const tally = tallies.get(kind) as Tally;
    tally.sent += 1;
    // Deadlocks need contention: those transfers stay among their own few accounts.
    const [first, count] = kind === 'deadlocky' ? [1, DEADLOCK_ACCOUNTS] : [DEADLOCK_ACCOUNTS + 1, ACCOUNTS - DEADLOCK_ACCOUNTS];
    const from = random.int(0, count - 1);
    const to = (from + 1 + random.int(0, count - 2)) % count;
    const dto = { from: first + from, to: first + to, amount: random.int(1, 9) };
    const controller = new AbortController();
    const timer = kind === 'abort' ? setTimeout(() => controller.abort(), random() * 15) : undefined;
    const path = {
      transfer: 'transfer',
      abort: 'transfer',
      fails: 'fails',
      slow: 'slow',
      killed: 'killed',
      deadlocky: 'deadlocky',
      total: 'total',
    }[kind];
    try {
      const response = await fetch(`${base}/soak/${path}`, {
        method: kind === 'total' ? 'GET' : 'POST',
        headers: kind === 'total' ? undefined : { 'content-type': 'application/json' },
        body: kind === 'total' ? undefined : JSON.stringify(dto),
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(30_000)]),
      });
      const body = await response.text();
      if (EXPECTED[kind](response.status, body)) tally.ok += 1;
      else {
        tally.unexplained += 1;
        if (tally.samples.length < 3) tally.samples.push(`${response.status} ${body.slice(0, 300)}`);
      }
    } catch (error) {
      if (controller.signal.aborted) tally.cut += 1;
      else {
        tally.unexplained += 1;
        if (tally.samples.length < 3) tally.samples.push(String(error));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const index = next++;
        if (index === WARM_UP) warmedUp = internal().then((r) => void (heapAfterWarmUp = r.heapUsed));
        await one(index);
        if (Date.now() - lastReport > 10_000) {
          lastReport = Date.now();
          const rate = Math.round(next / ((Date.now() - started) / 1000));
          process.stdout.write(`  ${next} requests sent, ${rate} req/s\n`);
        }
      }
    }),
  );
  await warmedUp;
  const seconds = (Date.now() - started) / 1000;

  // Settled: nothing open, every connection idle. (Cut requests may still be finishing their rollback;
  // on a busy machine that takes a while: up to 30 s is waited for before anything counts as leaked.)
  let end = await internal();
  for (let i = 0; i < 600 && (end.stats.openUnitsOfWork > 0 || end.stats.connectionsHeld > 0); i++) {
    await delay(50);
    end = await internal();
  }
  const { rows: openTransactions } = await admin.query(
    `SELECT count(*)::int AS count FROM pg_stat_activity
      WHERE application_name = $1 AND datname = current_database() AND xact_start IS NOT NULL`,
    [APPLICATION_NAME],
  );
  const { rows: accounts } = await admin.query<{ id: number; balance: number }>(
    'SELECT id, balance FROM soak_accounts ORDER BY id',
  );
  const { rows: moved } = await admin.query<{ id: number; delta: number }>(
    `SELECT id, SUM(delta)::int AS delta FROM (
       SELECT "fromId" AS id, -amount AS delta FROM soak_transfers
       UNION ALL SELECT "toId", amount FROM soak_transfers) t GROUP BY id`,
  );
  const deltas = new Map(moved.map((row) => [row.id, row.delta]));
  const booksOff = accounts.filter((a) => a.balance !== OPENING_BALANCE + (deltas.get(a.id) ?? 0));
  const total = accounts.reduce((sum, a) => sum + a.balance, 0);

  child.send('stop');
  await new Promise((resolve) => child.once('exit', resolve));
  await admin.end();

  const source = end.stats.dataSources.default;
  const leaked = end.stats.connectionsHeld + (source.pool.total - source.pool.idle) + source.pool.waiting;
  const growthMb = (end.heapUsed - heapAfterWarmUp) / 1024 / 1024;
  const unexplained = [...tallies.values()].reduce((sum, t) => sum + t.unexplained, 0);

  const line = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;
  const out: string[] = [];
  out.push('');
  out.push(
    `Soak: ${REQUESTS} requests in ${seconds.toFixed(1)} s (${Math.round(REQUESTS / seconds)} req/s), ${CONCURRENCY} concurrent, pool ${POOL_SIZE}, PostgreSQL`,
  );
  out.push(seedLine(seed));
  out.push('');
  out.push(line(['kind', 'sent', 'answered as expected', 'cut by the client', 'unexplained']));
  out.push(line(['---', '---:', '---:', '---:', '---:']));
  for (const [kind, t] of tallies) out.push(line([kind, t.sent, t.ok, t.cut, t.unexplained]));
  out.push('');
  out.push(
    `library: ${end.stats.commits} commits, ${end.stats.rollbacks} rollbacks, ${end.stats.retries} retries, ` +
      `${end.stats.acquisitionFailures} acquisition failures, ${end.stats.guardViolations} guard violations; ` +
      `acquisition wait p50/p99/max ${source.acquisitionWaitMs.p50}/${source.acquisitionWaitMs.p99}/${source.acquisitionWaitMs.max} ms; ` +
      `transaction p50/p99/max ${source.transactionMs.p50}/${source.transactionMs.p99}/${source.transactionMs.max} ms`,
  );
  out.push(
    `leaked connections: ${leaked} (held ${end.stats.connectionsHeld}, pool ${source.pool.total} open / ${source.pool.idle} idle / ${source.pool.waiting} waiting); ` +
      `open units of work: ${end.stats.openUnitsOfWork}; transactions left open in the database: ${openTransactions[0].count}`,
  );
  out.push(`books: total ${total} (expected ${ACCOUNTS * OPENING_BALANCE}); accounts off their transfers: ${booksOff.length}`);
  out.push(
    `heap of the app after a forced GC: ${(heapAfterWarmUp / 1024 / 1024).toFixed(1)} MB after ${WARM_UP} requests, ${(end.heapUsed / 1024 / 1024).toFixed(1)} MB at the end (${growthMb >= 0 ? '+' : ''}${growthMb.toFixed(1)} MB)`,
  );
  for (const [kind, t] of tallies) for (const sample of t.samples) out.push(`  unexplained ${kind}: ${sample}`);
  process.stdout.write(`${out.join('\n')}\n`);

  const failed =
    leaked !== 0 ||
    end.stats.openUnitsOfWork !== 0 ||
    openTransactions[0].count !== 0 ||
    unexplained !== 0 ||
    booksOff.length !== 0 ||
    total !== ACCOUNTS * OPENING_BALANCE ||
    growthMb > MAX_HEAP_GROWTH_MB;
  if ((globalThis as { gc?: unknown }).gc === undefined)
    process.stdout.write('(run with node --expose-gc for the heap figures)\n');
  process.exit(failed ? 1 : 0);
}

if (process.argv[2] === 'server') void serve();
else
  drive().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
