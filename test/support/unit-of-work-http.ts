/**
 * The client-abort property: a program runs as an HTTP handler (its `@Tx()` manager is the program's
 * `tx`); the client disconnects at the program's abort point while the handler waits there, and the
 * handler then goes on. The unit of work must roll back on the spot: nothing written, the afterRollback
 * hooks registered until then run, no afterCommit hook, `stats()` one rollback if it had run a
 * statement, the connection back in the pool. No Jest in here.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Controller, Injectable, Post } from '@nestjs/common';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource, EntityManager } from 'typeorm';
import { TransactionalModule, TransactionHost, TransactionRunner, Tx } from '../../lib/index';
import { dialectOf } from '../../lib/core/dialect';
import { type AdapterName, createApp, type TestApp } from './app';
import { latch, type Latch } from './latch';
import { abortModel, type Program } from './unit-of-work-model';
import {
  connectRaw,
  HANG_MS,
  type HarnessDatabase,
  Interpreter,
  modelTypeormOptions,
  openTransactions,
  type Observed,
  prepareTables,
  type RawConnection,
  report,
  withinHang,
} from './unit-of-work-harness';

/** The program the next request runs, and the latches the harness holds its handler with. */
@Injectable()
class AbortProbe {
  program?: Program;
  interpreter?: Interpreter;
  /** Resolved by the handler at the abort point. */
  entered: Latch = latch();
  /** Resolved by the harness to let the handler go on. */
  release: Latch = latch();
  /** Resolved by the handler when it ended, however. */
  finished: Latch = latch();
  /** The handler's unit of work's state, read from inside it. */
  state: () => string | undefined = () => undefined;

  reset(program: Program, interpreter: Interpreter): void {
    this.release.resolve();
    this.program = program;
    this.interpreter = interpreter;
    this.entered = latch();
    this.release = latch();
    this.finished = latch();
    this.state = () => undefined;
  }
}

@Controller('model')
class ModelController {
  constructor(
    private readonly probe: AbortProbe,
    private readonly host: TransactionHost,
  ) {}

  @Post()
  async run(@Tx() tx: EntityManager): Promise<{ value: string }> {
    const probe = this.probe;
    probe.state = AsyncLocalStorage.bind(() => this.host.current()?.state);
    try {
      const pause = {
        at: probe.program!.abortAt!,
        wait: async () => {
          probe.entered.resolve();
          await probe.release.promise;
        },
      };
      return { value: await probe.interpreter!.block(probe.program!.body, tx, pause) };
    } finally {
      probe.finished.resolve();
    }
  }
}

/** An HTTP app with the library on one database and one adapter, and an observer of that database. */
export class AbortHarness {
  private testApp!: TestApp;
  private probe!: AbortProbe;
  private host!: TransactionHost;
  private runner!: TransactionRunner;
  private dataSource!: DataSource;
  private observer!: RawConnection;

  private constructor(
    readonly database: HarnessDatabase,
    readonly adapter: AdapterName,
    private readonly applicationName: string,
  ) {}

  /** Starts the app (a pool of one connection) and prepares the tables. */
  static async start(database: HarnessDatabase, adapter: AdapterName): Promise<AbortHarness> {
    const harness = new AbortHarness(database, adapter, `model-abort-${database.dialect}-${adapter}`);
    await harness.boot();
    harness.observer = await connectRaw(database);
    await prepareTables(harness.observer);
    return harness;
  }

  private async boot(): Promise<void> {
    this.testApp = await createApp({
      adapter: this.adapter,
      imports: [
        TypeOrmModule.forRoot(modelTypeormOptions(this.database, this.applicationName, 1)),
        TransactionalModule.forRoot(),
      ],
      controllers: [ModelController],
      providers: [AbortProbe],
    });
    this.probe = this.testApp.app.get(AbortProbe);
    this.host = this.testApp.app.get(TransactionHost);
    this.runner = this.testApp.app.get(TransactionRunner);
    this.dataSource = this.testApp.app.get<DataSource>(getDataSourceToken());
  }

  async close(): Promise<void> {
    this.probe?.release.resolve();
    await this.testApp?.close();
    await this.observer?.close();
  }

  /** Runs `program` as a request its client abandons at `program.abortAt`; the divergence report, or undefined. */
  async check(program: Program): Promise<string | undefined> {
    await this.observer.query('DELETE FROM model_rows WHERE id > 0');
    const before = this.host.stats().dataSources.default;
    const interpreter = new Interpreter(this.database, this.runner, this.host, this.observer);
    this.probe.reset(program, interpreter);
    const problems: string[] = [];
    const client = new AbortController();
    const response = fetch(`${this.testApp.url}/model`, { method: 'POST', signal: client.signal }).then(
      async (answer) => `answered ${answer.status}: ${await answer.text()}`,
      () => 'aborted',
    );
    const reached = await withinHang(Promise.race([this.probe.entered.promise.then(() => 'entered'), response]));
    if (reached !== 'entered') {
      problems.push(`the handler never reached the abort point (${reached})`);
    } else {
      client.abort();
      if (!(await this.until(() => this.probe.state() === 'rolledBack'))) {
        problems.push(`the unit of work was not rolled back when the client disconnected (state: ${this.probe.state()})`);
      }
    }
    this.probe.release.resolve();
    if ((await withinHang(this.probe.finished.promise)) === 'hang')
      problems.push(`the handler did not end within ${HANG_MS} ms of its release`);
    const answer = await response;
    if (answer !== 'aborted') problems.push(`the client got an answer: ${answer}`);
    if (!(await this.until(() => this.idle())))
      problems.push(`leak: the pool is not idle (${JSON.stringify(this.poolAndStats())})`);
    else {
      const open = await openTransactions(this.database, this.observer, this.dataSource, this.applicationName);
      if (open > 0) problems.push(`leak: ${open} connection(s) of the app inside a transaction`);
    }
    const after = this.host.stats().dataSources.default;
    const rows = await this.observer.query<{ id: number }>('SELECT id FROM model_rows WHERE id > 0 ORDER BY id');
    const observed: Observed = {
      status: this.probe.state(),
      hooks: interpreter.ran,
      stats: { commits: after.commits - before.commits, rollbacks: after.rollbacks - before.rollbacks },
      rows: rows.map((row) => Number(row.id)),
      steps: interpreter.steps,
    };
    const expected = abortModel(program);
    // The steps after the abort point fail however the library words it: only those before count.
    const before_abort = new Set(expected.steps.keys());
    for (const n of [...observed.steps.keys()]) if (!before_abort.has(n)) observed.steps.delete(n);
    return report({
      title: `Divergence on ${this.database.dialect} over ${this.adapter} when the client disconnects`,
      program: program.toString(),
      expected,
      observed,
      errors: interpreter.errors,
      problems,
    });
  }

  private poolAndStats() {
    const pool = dialectOf(this.dataSource)!.poolStats(this.dataSource);
    const { openUnitsOfWork, connectionsHeld } = this.host.stats();
    return { pool, openUnitsOfWork, connectionsHeld };
  }

  private idle(): boolean {
    const { pool, openUnitsOfWork, connectionsHeld } = this.poolAndStats();
    return pool.idle === pool.total && pool.waiting === 0 && openUnitsOfWork === 0 && connectionsHeld === 0;
  }

  /** Polls `condition` for up to 5 s. */
  private async until(condition: () => boolean): Promise<boolean> {
    const deadline = Date.now() + 5000;
    while (!condition()) {
      if (Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return true;
  }
}
