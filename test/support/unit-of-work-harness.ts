/**
 * Runs the programs of `unit-of-work-model.ts` through the library on a real database and compares what
 * the library reported — `run()`'s outcome, the unit's state, the hooks that ran, `stats()`, each step's
 * own call — and what the database holds (read through a separate connection) with the model. No Jest
 * in here: the e2e spec and `scripts/model-check.ts` both use it.
 */
import { Test, type TestingModule } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { createConnection, type Connection as MysqlConnection } from 'mysql2/promise';
import { AsyncLocalStorage } from 'node:async_hooks';
import { Client } from 'pg';
import type { DataSource, EntityManager } from 'typeorm';
import { dialectOf } from '../../lib/core/dialect';
import { TransactionalModule, TransactionHost, TransactionRunner } from '../../lib/index';
import { isDeadlock } from './database-errors';
import { ModelBallast, ModelLock, ModelRow } from './entities';
import { barrier } from './latch';
import {
  type Block,
  type CrossStep,
  describeOutcome,
  type Dialect,
  type FailStep,
  type InsertStep,
  model,
  type Program,
  ProgramError,
  type ProgramPair,
  type SavepointStep,
  type Step,
  type StepOutcome,
  type UnitOutcome,
} from './unit-of-work-model';

/** The entities of the harness's apps. */
export const MODEL_ENTITIES = [ModelRow, ModelLock, ModelBallast];

/** Lock rows 1 … LOCK_ROWS exist; deadlock step `#n` uses rows 2n - 1 and 2n; the two-unit deadlock, the last two. */
const LOCK_ROWS = 1000;
const CROSS_ROWS = [LOCK_ROWS - 1, LOCK_ROWS] as const;
const BALLAST_ROWS = 500;

/** Where a harness connects. */
export interface HarnessDatabase {
  dialect: Dialect;
  /** The app's database. */
  url: string;
  /**
   * Where connections outside the app (the observer, deadlock partners) connect, when not `url`: the
   * server itself when the app goes through PgBouncer (`DATABASE_DIRECT_URL` in the PgBouncer run).
   */
  directUrl?: string;
}

/** How long a unit of work may take before the harness calls it a hang. Default 20 s (`MODEL_HANG_MS`). */
export const HANG_MS = Number(process.env.MODEL_HANG_MS ?? '') || 20_000;

/** TypeORM options of the app under test. */
export function modelTypeormOptions(database: HarnessDatabase, applicationName: string, poolSize: number): TypeOrmModuleOptions {
  const common = {
    url: database.url,
    poolSize,
    entities: MODEL_ENTITIES,
    synchronize: true,
    dropSchema: false,
    retryAttempts: 0,
  };
  if (database.dialect === 'postgres') {
    return { ...common, type: 'postgres', connectTimeoutMS: 2000, applicationName };
  }
  return { ...common, type: 'mariadb', connectTimeout: 2000, extra: { connectAttributes: { program_name: applicationName } } };
}

// ---------------------------------------------------------------------------------------------
// Raw connections: the observer, and deadlock partners

/** A connection outside the app: reads what the database holds, or plays the other transaction of a deadlock. */
export interface RawConnection {
  readonly dialect: Dialect;
  /** Server-side id: PostgreSQL backend pid, MariaDB thread id. */
  readonly id: number;
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): Promise<void>;
}

/** Opens a {@link RawConnection} (to `directUrl` when set) tagged with `applicationName` on PostgreSQL. */
export async function connectRaw(database: HarnessDatabase, applicationName = 'model-observer'): Promise<RawConnection> {
  if (database.dialect === 'postgres') {
    const client = new Client({
      connectionString: database.directUrl ?? database.url,
      application_name: applicationName,
      connectionTimeoutMillis: 5000,
    });
    client.on('error', () => undefined);
    await client.connect();
    const [{ pid }] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
    return {
      dialect: 'postgres',
      id: pid,
      query: async <T>(sql: string) => (await client.query(sql)).rows as T[],
      close: () => client.end().catch(() => undefined),
    };
  }
  const connection: MysqlConnection = await createConnection({ uri: database.directUrl ?? database.url, connectTimeout: 5000 });
  connection.on('error', () => undefined);
  return {
    dialect: 'mariadb',
    id: connection.threadId,
    query: async <T>(sql: string) => (await connection.query(sql))[0] as T[],
    close: () => connection.end().catch(() => undefined),
  };
}

/** Creates what the programs expect beside the tables TypeORM made: the committed row 0 (for duplicates), lock rows. */
export async function prepareTables(observer: RawConnection): Promise<void> {
  const ignore = observer.dialect === 'postgres' ? ['', ' ON CONFLICT DO NOTHING'] : [' IGNORE', ''];
  await observer.query(`DELETE FROM model_rows`);
  await observer.query(`INSERT${ignore[0]} INTO model_rows (id) VALUES (0)${ignore[1]}`);
  const ids = Array.from({ length: LOCK_ROWS }, (_, i) => `(${i + 1})`).join(', ');
  await observer.query(`INSERT${ignore[0]} INTO model_locks (id) VALUES ${ids}${ignore[1]}`);
  await observer.query(`DELETE FROM model_ballast`);
}

function lockSql(row: number): string {
  return `SELECT id FROM model_locks WHERE id = ${row} FOR UPDATE`;
}

/**
 * PostgreSQL detects a deadlock only once a waiter has waited `deadlock_timeout` (1 s by default), and
 * the waiter that checks first is the victim. The unit's transaction (not the session: PgBouncer's
 * transaction pooling keeps none) checks after 50 ms, a partner's after 60 s.
 */
const UNIT_DEADLOCK_TIMEOUT = `SET LOCAL deadlock_timeout = '50ms'`;
const PARTNER_DEADLOCK_TIMEOUT = `SET LOCAL deadlock_timeout = '60s'`;

// ---------------------------------------------------------------------------------------------
// The interpreter: a program as the code it stands for

/** What a program's steps use and record while they run. */
export class Interpreter {
  /** Labels of the hooks that ran, in order. */
  readonly ran: string[] = [];
  readonly steps = new Map<number, StepOutcome>();
  readonly errors = new Map<number, unknown>();
  /** Trouble of the harness itself (a partner that never waited): reported, never blamed on the library. */
  readonly problems: string[] = [];
  private readonly partners: Array<Promise<void>> = [];

  constructor(
    readonly database: HarnessDatabase,
    readonly runner: TransactionRunner,
    readonly host: TransactionHost,
    private readonly observer: RawConnection,
    /** For {@link CrossStep}: waits until the other unit locked its first row (or ended). */
    private readonly crossed?: () => Promise<void>,
  ) {}

  /**
   * Runs a block with `tx`; with `pause`, awaits it before root step `pause.at` (the client-abort
   * property's latch).
   */
  async block(block: Block, tx: EntityManager, pause?: { at: number; wait: () => Promise<void> }): Promise<string> {
    for (const [index, step] of block.steps.entries()) {
      if (pause?.at === index) await pause.wait();
      await this.step(step, tx);
    }
    if (pause?.at === block.steps.length) await pause.wait();
    if (block.throws) throw new ProgramError(block.n);
    return `value#${block.n}`;
  }

  private step(step: Step, tx: EntityManager): Promise<unknown> {
    switch (step.kind) {
      case 'insert':
        return caught(
          step.caught,
          this.record(step.n, () => this.insert(step, tx)),
        );
      case 'fail':
        return caught(
          step.caught,
          this.record(step.n, () => this.fail(step, tx)),
        );
      case 'hook':
        return this.record(step.n, () => {
          const label = `${step.on}#${step.n}`;
          const hook = () => void this.ran.push(label);
          if (step.on === 'commit') this.host.afterCommit(hook);
          else this.host.afterRollback(hook);
        });
      case 'savepoint':
        return caught(
          step.caught,
          this.record(step.n, () => this.savepoint(step, tx)),
        );
      case 'join':
        return caught(
          step.caught,
          this.record(step.n, () => this.runner.run((inner) => this.block(step.body, inner))),
        );
      case 'concurrent':
        return caught(
          step.caught,
          this.record(step.n, () => this.concurrent(step.branches, step.settle, tx)),
        );
      case 'deadlock':
        return caught(
          step.caught,
          this.record(step.n, () => this.deadlock(step.n, tx)),
        );
      case 'cross':
        return caught(
          step.caught,
          this.record(step.n, () => this.cross(step, tx)),
        );
    }
  }

  /** Calls `call` (a throw becomes a rejection) and records how the call itself ended. */
  private record(n: number, call: () => unknown): Promise<unknown> {
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(call());
    } catch (error) {
      promise = Promise.reject(error);
    }
    return promise.then(
      (value) => {
        this.steps.set(n, 'ok');
        return value;
      },
      (error: unknown) => {
        this.steps.set(n, 'failed');
        this.errors.set(n, error);
        throw error;
      },
    );
  }

  private insert(step: InsertStep, tx: EntityManager): Promise<unknown> {
    if (step.api === 'insert') return tx.insert(ModelRow, { id: step.n });
    if (step.api === 'save') return tx.getRepository(ModelRow).save({ id: step.n });
    return tx.query(`INSERT INTO model_rows (id) VALUES (${step.n})`);
  }

  private fail(step: FailStep, tx: EntityManager): Promise<unknown> {
    if (step.failure === 'division') return tx.query('SELECT 1/0');
    if (step.failure === 'duplicate') return tx.insert(ModelRow, { id: 0 });
    return tx.query('INSERT INTO model_rows (id) VALUES (0)');
  }

  private savepoint(step: SavepointStep, tx: EntityManager): Promise<unknown> {
    if (step.via === 'transaction') return tx.transaction((inner) => this.block(step.body, inner));
    return this.runner.run((inner) => this.block(step.body, inner), { propagation: 'nested' });
  }

  /**
   * Calls every branch at once, in order; awaits them all, then settles like `Promise.all` (the first
   * error in call order) or `Promise.allSettled`. Awaiting them all first keeps a rejection from ending
   * the enclosing savepoint while a sibling still runs, which the model leaves open.
   */
  private async concurrent(
    branches: Array<InsertStep | SavepointStep>,
    settle: 'all' | 'allSettled',
    tx: EntityManager,
  ): Promise<unknown> {
    const calls = branches.map((branch) =>
      this.record(branch.n, () => (branch.kind === 'insert' ? this.insert(branch, tx) : this.savepoint(branch, tx))),
    );
    const settled = await Promise.allSettled(calls);
    return settle === 'all' ? Promise.all(calls) : settled;
  }

  /**
   * This unit locks row 2n - 1; a partner transaction locks 2n and asks for 2n - 1 (it waits); then this
   * unit asks for 2n, closing the cycle. The database picks this unit as victim: on PostgreSQL it checks
   * for the deadlock first (50 ms against the partner's 60 s), on MariaDB it weighs less.
   */
  private async deadlock(n: number, tx: EntityManager): Promise<void> {
    const [mine, theirs] = [2 * n - 1, 2 * n];
    if (theirs > CROSS_ROWS[0] - 1) throw new Error(`deadlock step #${n}: the program is too large for the lock rows`);
    await tx.query(lockSql(mine));
    if (this.database.dialect === 'postgres') await tx.query(UNIT_DEADLOCK_TIMEOUT);
    const partner = await connectRaw(this.database, 'model-partner');
    try {
      if (this.database.dialect === 'postgres') {
        await partner.query('BEGIN');
        await partner.query(PARTNER_DEADLOCK_TIMEOUT);
      } else {
        await partner.query('START TRANSACTION');
        const values = Array.from({ length: BALLAST_ROWS }, () => `(${n})`).join(', ');
        await partner.query(`INSERT INTO model_ballast (n) VALUES ${values}`);
      }
      await partner.query(lockSql(theirs));
    } catch (error) {
      await partner.close();
      throw new Error(`the deadlock partner of #${n} failed to set up: ${String(error)}`, { cause: error });
    }
    const asked = partner.query(lockSql(mine)).then(
      () => 'granted' as const,
      () => 'failed' as const,
    );
    // Whenever the partner's wait ends (this unit released its row, or the partner was chosen): let go.
    const partnerDone = asked.then(async () => {
      await partner.query('ROLLBACK').catch(() => undefined);
      await partner.close();
    });
    this.partners.push(partnerDone);
    const first = await Promise.race([asked, this.untilWaiting(partner).then(() => 'waiting' as const)]);
    if (first === 'granted') {
      // The row was free: this unit does not hold it (a statement outside a transaction?). No deadlock.
      await partnerDone;
    }
    await tx.query(lockSql(theirs));
  }

  /** Resolves once `partner` waits for a row lock; a problem of the harness after 10 s. */
  private async untilWaiting(partner: RawConnection): Promise<void> {
    const deadline = Date.now() + 10_000;
    const sql =
      partner.dialect === 'postgres'
        ? `SELECT 1 AS waiting FROM pg_stat_activity WHERE pid = ${partner.id} AND wait_event_type = 'Lock'`
        : `SELECT 1 AS waiting FROM information_schema.PROCESSLIST WHERE ID = ${partner.id} AND COMMAND = 'Query' AND INFO LIKE '%FOR UPDATE%'`;
    while (Date.now() < deadline) {
      if ((await this.observer.query(sql)).length > 0) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.problems.push(`a deadlock partner (connection ${partner.id}) never waited for the unit's row lock`);
  }

  /** Locks one shared row, waits for the other unit to lock the other, asks for it. */
  private async cross(step: CrossStep, tx: EntityManager): Promise<void> {
    await tx.query(lockSql(CROSS_ROWS[step.first]));
    if (this.database.dialect === 'postgres') await tx.query(UNIT_DEADLOCK_TIMEOUT);
    await this.crossed?.();
    await tx.query(lockSql(CROSS_ROWS[1 - step.first]));
  }

  /** Waits for the deadlock partners to let go (each does once this unit released its row). */
  async partnersDone(): Promise<void> {
    const all = Promise.all(this.partners);
    const timeout = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 10_000).unref());
    if ((await Promise.race([all, timeout])) === 'late')
      this.problems.push('a deadlock partner was still waiting 10 s after the unit ended');
  }
}

function caught(flag: boolean, promise: Promise<unknown>): Promise<unknown> {
  return flag ? promise.catch(() => undefined) : promise;
}

// ---------------------------------------------------------------------------------------------
// What was observed, compared with the model

/** `run()` as observed: its value, or its error. */
export type ObservedRun = { resolves: unknown } | { rejects: unknown };

/** What the library and the database reported for one unit of work. */
export interface Observed extends Omit<UnitOutcome, 'run' | 'status' | 'stats'> {
  run?: ObservedRun;
  status: string | undefined;
  /** Unknown for one of two concurrent units: `stats()` counts for the data source. */
  stats?: UnitOutcome['stats'];
}

/** The aspects of `observed` that differ from `expected`. */
export function differences(expected: Partial<UnitOutcome>, observed: Observed): string[] {
  const found: string[] = [];
  if (expected.run !== undefined && observed.run !== undefined) {
    const run = observed.run;
    if ('resolves' in expected.run) {
      if (!('resolves' in run) || run.resolves !== expected.run.resolves) found.push('run() outcome');
    } else if (!('rejects' in run)) {
      found.push('run() outcome');
    } else if (
      expected.run.rejects !== undefined &&
      !(run.rejects instanceof ProgramError && run.rejects.n === expected.run.rejects)
    ) {
      found.push('run() error');
    }
  }
  if (expected.status !== undefined && observed.status !== expected.status) found.push('status');
  if (expected.hooks !== undefined && expected.hooks.join() !== observed.hooks.join()) found.push('hooks');
  const stats = observed.stats;
  if (
    expected.stats !== undefined &&
    stats !== undefined &&
    (expected.stats.commits !== stats.commits || expected.stats.rollbacks !== stats.rollbacks)
  ) {
    found.push('stats()');
  }
  if (expected.rows !== undefined && expected.rows.join() !== observed.rows.join()) found.push('rows');
  for (const [n, outcome] of expected.steps ?? []) {
    const seen = observed.steps.get(n);
    if (seen !== undefined && outcome !== 'either' && seen !== outcome) {
      found.push('step outcomes');
      break;
    }
  }
  return found;
}

function describeError(error: unknown): string {
  if (error instanceof ProgramError) return `ProgramError(${error.n})`;
  if (error instanceof Error) return `${error.name}: ${error.message.split('\n')[0].slice(0, 200)}`;
  return String(error);
}

/** Observed facts, one line per aspect. */
export function describeObserved(observed: Observed): string[] {
  const lines: string[] = [];
  if (observed.run !== undefined) {
    lines.push(
      'resolves' in observed.run
        ? `run() resolves with ${JSON.stringify(observed.run.resolves)}`
        : `run() rejects with ${describeError(observed.run.rejects)}`,
    );
  }
  return [...lines, ...describeOutcome({ ...observed, run: undefined, status: observed.status as UnitOutcome['status'] })];
}

/** Each step's outcome, model / observed, marking where they differ. */
export function describeSteps(expected: Map<number, StepOutcome>, observed: Observed, errors: Map<number, unknown>): string {
  const numbers = [...new Set([...expected.keys(), ...observed.steps.keys()])].sort((a, b) => a - b);
  return numbers
    .map((n) => {
      const model = expected.get(n) ?? 'not run';
      const seen = observed.steps.get(n) ?? 'not run';
      const error = errors.get(n);
      const why = error === undefined ? '' : ` (${describeError(error)})`;
      const mark = model !== seen && model !== 'either' && model !== 'not run' && seen !== 'not run' ? '   <-- differs' : '';
      return `  #${n}: model ${model}, observed ${seen}${why}${mark}`;
    })
    .join('\n');
}

/** A divergence report, or undefined when everything matched. */
export function report(options: {
  title: string;
  program: string;
  expected: Partial<UnitOutcome>;
  observed: Observed;
  errors: Map<number, unknown>;
  problems?: string[];
}): string | undefined {
  const found = differences(options.expected, options.observed);
  const problems = options.problems ?? [];
  if (found.length === 0 && problems.length === 0) return undefined;
  return [
    `${options.title}: ${[...found, ...problems.map(() => 'harness')].join(', ')}`,
    ...problems.map((problem) => `harness: ${problem}`),
    'program:',
    options.program,
    'model:',
    ...describeOutcome(options.expected).map((line) => `  ${line}`),
    'observed:',
    ...describeObserved(options.observed).map((line) => `  ${line}`),
    'steps:',
    describeSteps(options.expected.steps ?? new Map(), options.observed, options.errors),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Units of work through TransactionRunner.run()

type Counts = { commits: number; rollbacks: number };

/** A Nest app with the library on one database, and an observer of that database. */
export class RunnerHarness {
  private moduleRef!: TestingModule;
  runner!: TransactionRunner;
  host!: TransactionHost;
  dataSource!: DataSource;
  private observer!: RawConnection;

  private constructor(
    readonly database: HarnessDatabase,
    private readonly applicationName: string,
  ) {}

  /** Starts the app (a pool of 2 connections: the two-unit deadlock needs both) and prepares the tables. */
  static async start(database: HarnessDatabase, applicationName = `model-runner-${database.dialect}`): Promise<RunnerHarness> {
    const harness = new RunnerHarness(database, applicationName);
    await harness.boot();
    harness.observer = await connectRaw(database);
    await prepareTables(harness.observer);
    return harness;
  }

  private async boot(): Promise<void> {
    this.moduleRef = await Test.createTestingModule({
      imports: [
        TypeOrmModule.forRoot(modelTypeormOptions(this.database, this.applicationName, 2)),
        TransactionalModule.forRoot(),
      ],
    }).compile();
    this.moduleRef.useLogger(false);
    await this.moduleRef.init();
    this.runner = this.moduleRef.get(TransactionRunner);
    this.host = this.moduleRef.get(TransactionHost);
    this.dataSource = this.moduleRef.get<DataSource>(getDataSourceToken());
  }

  async close(): Promise<void> {
    await this.moduleRef?.close();
    await this.observer?.close();
  }

  private counts(): Counts {
    const { commits, rollbacks } = this.host.stats().dataSources.default;
    return { commits, rollbacks };
  }

  private async rows(): Promise<number[]> {
    const rows = await this.observer.query<{ id: number }>('SELECT id FROM model_rows WHERE id > 0 ORDER BY id');
    return rows.map((row) => Number(row.id));
  }

  /** Runs one program as a unit of work; the divergence report, or undefined when all matched. */
  async check(program: Program): Promise<string | undefined> {
    await this.observer.query('DELETE FROM model_rows WHERE id > 0');
    const before = this.counts();
    const interpreter = new Interpreter(this.database, this.runner, this.host, this.observer);
    const unit = this.unit(program, interpreter);
    const settled = await withinHang(unit.run);
    if (settled === 'hang') return this.hang(program, interpreter);
    await interpreter.partnersDone();
    const leak = await this.leaks();
    const after = this.counts();
    const observed: Observed = {
      run: settled,
      status: unit.status(),
      hooks: interpreter.ran,
      stats: { commits: after.commits - before.commits, rollbacks: after.rollbacks - before.rollbacks },
      rows: await this.rows(),
      steps: interpreter.steps,
    };
    return report({
      title: `Divergence on ${this.database.dialect}`,
      program: program.toString(),
      expected: model(program),
      observed,
      errors: interpreter.errors,
      problems: [...interpreter.problems, ...(leak ? [leak] : [])],
    });
  }

  /**
   * Runs a pair of programs as two concurrent units of work that deadlock on two shared rows: exactly
   * one must get the deadlock error, and each must come to what the model says with that victim.
   */
  async checkPair(pair: ProgramPair): Promise<string | undefined> {
    await this.observer.query('DELETE FROM model_rows WHERE id > 0');
    const before = this.counts();
    const meet = barrier(2);
    // A unit that ended before its cross step must not leave the other waiting at the barrier.
    let ended: () => void = () => undefined;
    const oneEnded = new Promise<void>((resolve) => (ended = resolve));
    const crossed = () => Promise.race([meet.arrive(), oneEnded]);
    const interpreters = [pair.a, pair.b].map(
      () => new Interpreter(this.database, this.runner, this.host, this.observer, crossed),
    );
    const units = [pair.a, pair.b].map((program, i) => this.unit(program, interpreters[i]));
    const runs = units.map((unit) => unit.run.finally(ended));
    const settled = await withinHang(Promise.all(runs));
    if (settled === 'hang') return this.hang(pair, interpreters[0]);
    const leak = await this.leaks();
    const after = this.counts();
    const rows = await this.rows();
    const crossOf = (program: Program) => findCross(program.body) as CrossStep;
    const victims = [pair.a, pair.b].map((program, i) => isDeadlock(interpreters[i].errors.get(crossOf(program).n)));
    const expected = [pair.a, pair.b].map((program, i) => model(program, { victim: victims[i] }));
    const observed: Observed[] = units.map((unit, i) => ({
      run: settled[i],
      status: unit.status(),
      hooks: interpreters[i].ran,
      rows: rows.filter((id) => idsOf(i === 0 ? pair.a : pair.b).has(id)),
      steps: interpreters[i].steps,
    }));
    const problems = [...interpreters.flatMap((i) => i.problems), ...(leak ? [leak] : [])];
    if (victims.filter(Boolean).length !== 1) {
      problems.push(`${victims.filter(Boolean).length} of the two units got the deadlock error; exactly one must`);
    }
    const total = {
      commits: expected[0].stats.commits + expected[1].stats.commits,
      rollbacks: expected[0].stats.rollbacks + expected[1].stats.rollbacks,
    };
    const seen = { commits: after.commits - before.commits, rollbacks: after.rollbacks - before.rollbacks };
    if (total.commits !== seen.commits || total.rollbacks !== seen.rollbacks) {
      problems.push(
        `stats() counted commits +${seen.commits}, rollbacks +${seen.rollbacks} for the two; the model, +${total.commits} and +${total.rollbacks}`,
      );
    }
    const reports = [0, 1].map((i) =>
      report({
        title: `unit ${i === 0 ? 'A' : 'B'}${victims[i] ? ' (the deadlock victim)' : ''}`,
        program: (i === 0 ? pair.a : pair.b).toString(),
        expected: { ...expected[i], stats: undefined },
        observed: observed[i],
        errors: interpreters[i].errors,
      }),
    );
    if (problems.length === 0 && reports.every((r) => r === undefined)) return undefined;
    return [
      `Divergence on ${this.database.dialect} in the two-unit deadlock`,
      ...problems.map((problem) => `  ${problem}`),
      ...reports.map((r, i) => r ?? `unit ${i === 0 ? 'A' : 'B'}: as the model says\n${(i === 0 ? pair.a : pair.b).toString()}`),
    ].join('\n');
  }

  /** Starts `program` as a unit of work; `status()` reads its state through `TransactionHost.current()`. */
  private unit(program: Program, interpreter: Interpreter): { run: Promise<ObservedRun>; status: () => string | undefined } {
    let status: () => string | undefined = () => undefined;
    const run = (async () =>
      this.runner.run((tx) => {
        status = AsyncLocalStorage.bind(() => this.host.current()?.state);
        return interpreter.block(program.body, tx);
      }))().then(
      (value): ObservedRun => ({ resolves: value }),
      (error: unknown): ObservedRun => ({ rejects: error }),
    );
    return { run, status: () => status() };
  }

  /**
   * Waits (up to 5 s) for the pool to be idle, no unit of work open, no connection held, none of the
   * app's connections inside a transaction; the leak, or undefined.
   */
  private async leaks(): Promise<string | undefined> {
    const deadline = Date.now() + 5000;
    let last: string;
    for (;;) {
      last = await this.leakNow();
      if (last === '' || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (last === '') return undefined;
    await this.recover();
    return `leak: ${last} (the app was restarted)`;
  }

  private async leakNow(): Promise<string> {
    const pool = dialectOf(this.dataSource)!.poolStats(this.dataSource);
    const stats = this.host.stats();
    if (pool.idle !== pool.total || pool.waiting !== 0) return `pool not idle (${JSON.stringify(pool)})`;
    if (stats.openUnitsOfWork !== 0 || stats.connectionsHeld !== 0) {
      return `stats() shows ${stats.openUnitsOfWork} open unit(s) of work and ${stats.connectionsHeld} held connection(s)`;
    }
    const open = await openTransactions(this.database, this.observer, this.dataSource, this.applicationName);
    return open === 0 ? '' : `${open} connection(s) of the app inside a transaction`;
  }

  private async hang(program: Program | ProgramPair, interpreter: Interpreter): Promise<string> {
    await this.recover();
    return [
      `Divergence on ${this.database.dialect}: a unit of work did not settle within ${HANG_MS} ms (the app was restarted)`,
      'program:',
      program.toString(),
      'steps so far:',
      describeSteps(
        new Map(),
        { status: undefined, hooks: interpreter.ran, rows: [], steps: interpreter.steps },
        interpreter.errors,
      ),
    ].join('\n');
  }

  /** Ends the app's connections from outside and starts the app afresh. */
  private async recover(): Promise<void> {
    if (this.database.dialect === 'postgres') {
      await this.observer.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ('${this.applicationName}', 'model-partner')`,
      );
    } else {
      const pool = (
        this.dataSource.driver as unknown as { pool: { _allConnections: { toArray(): Array<{ threadId: number | null }> } } }
      ).pool;
      for (const { threadId } of pool._allConnections.toArray()) {
        if (threadId !== null) await this.observer.query(`KILL ${threadId}`).catch(() => undefined);
      }
    }
    const closing = this.moduleRef.close().catch(() => undefined);
    await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
    await this.boot();
  }
}

function findCross(block: Block): CrossStep | undefined {
  for (const step of block.steps) {
    if (step.kind === 'cross') return step;
    if (step.kind === 'savepoint' || step.kind === 'join') {
      const found = findCross(step.body);
      if (found) return found;
    }
  }
  return undefined;
}

function idsOf(program: Program): Set<number> {
  const ids = new Set<number>();
  const visit = (block: Block) => {
    for (const step of block.steps) {
      ids.add(step.n);
      if (step.kind === 'savepoint' || step.kind === 'join') visit(step.body);
      if (step.kind === 'concurrent') {
        for (const branch of step.branches) {
          ids.add(branch.n);
          if (branch.kind === 'savepoint') visit(branch.body);
        }
      }
    }
  };
  visit(program.body);
  return ids;
}

/**
 * How many of the app's connections are inside a transaction. PostgreSQL: its backends (by
 * `application_name`) with a transaction start. MariaDB: `@@in_transaction` asked on each pooled
 * connection (the pool must be idle), which, unlike `INNODB_TRX`, has no cache.
 */
export async function openTransactions(
  database: HarnessDatabase,
  observer: RawConnection,
  dataSource: DataSource,
  applicationName: string,
): Promise<number> {
  if (database.dialect === 'postgres') {
    const open = await observer.query(
      `SELECT pid FROM pg_stat_activity WHERE application_name = '${applicationName}' AND xact_start IS NOT NULL`,
    );
    return open.length;
  }
  const pool = dialectOf(dataSource)!.poolStats(dataSource);
  const answers = await Promise.all(
    Array.from({ length: pool.total }, () =>
      dataSource.query<Array<{ open: number | string }>>('SELECT @@in_transaction AS open'),
    ),
  );
  return answers.filter(([row]) => Number(row.open) !== 0).length;
}

/** `promise`, or `'hang'` after {@link HANG_MS}. */
export async function withinHang<T>(promise: Promise<T>): Promise<T | 'hang'> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => {
    timer = setTimeout(() => resolve('hang'), HANG_MS);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}
