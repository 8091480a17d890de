import type { EntityManager } from 'typeorm';
import { TransactionalError } from '../errors';
import { ConnectionClock } from './connection-clock';
import { ConnectionHold } from './connection-hold';
import { ConnectionLossWatch, lostConnectionError } from './connection-loss';
import { ConnectionTurns, type Level } from './connection-turns';
import { sendBegin } from './control-statements';
import type { DataSourceEntry } from './data-source-registry';
import type { BeginSpec } from './dialect';
import { resolveIdleInTransactionMs } from './idle-threshold';
import { bindQueryRunner, callOriginal, type BoundRunner } from './query-runner-binding';
import { isStream, openStreamError, RowStreams } from './row-streams';
import { levelOfCaller } from './savepoint-scope';
import { SlowTransactionMonitor } from './slow-transaction-monitor';
import { StatementAccounting } from './statement-accounting';
import { AbortState } from './transaction-abort';
import { discard, endTransaction } from './transaction-end';
import type { UnitOfWork } from './unit-of-work';

/**
 * The transaction of one unit of work on one data source: a QueryRunner whose connection is taken,
 * and BEGIN sent, by its first query; its statements, one at a time; its end (COMMIT or ROLLBACK,
 * then the connection released, or discarded when its state is unknown). Every path that would use
 * it after the unit of work settled fails.
 */
export class DataSourceTransaction {
  /** Whose statement goes to the connection next: one at a time, savepoints one after another. */
  readonly turns = new ConnectionTurns();
  /** What it holds of its pool, and since where: what the guard reads (lib/guard/hold-and-wait.ts). */
  readonly connectionHold: ConnectionHold;
  /** Where every statement begins and ends. */
  readonly statements: StatementAccounting;
  /** Time in the database vs idle in transaction, per route; `idleInTransactionMs` gaps. */
  readonly clock: ConnectionClock;
  /** Whether the database aborted the transaction or one of its savepoints (see `noteFailure()`). */
  readonly abort: AbortState;
  readonly spec: BeginSpec;
  /** TypeORM's depth for the unit of work's own level: 2 when it is a savepoint in a test's transaction. */
  readonly ownDepth: number;
  /** Which end statement went out, once it did: a connection lost after a COMMIT leaves its outcome unknown. */
  endSent?: 'COMMIT' | 'ROLLBACK';
  /** Whether its COMMIT went through. */
  committed = false;
  readonly loss = new ConnectionLossWatch();
  /** Streams of rows read through the connection: it is busy until they end or their reader destroys them. */
  private streams?: RowStreams;
  private runner?: BoundRunner;
  private opening?: Promise<unknown>;
  /** The driver connection, once its BEGIN went through. */
  private connection?: unknown;
  private ending?: Promise<void>;
  /** Set once its BEGIN went through: its end counts as a commit or a rollback. */
  began = false;
  private readonly slowMonitor?: SlowTransactionMonitor;

  constructor(
    readonly unitOfWork: UnitOfWork,
    readonly entry: DataSourceEntry,
  ) {
    const o = unitOfWork.options;
    this.spec = {
      isolationLevel: o.isolationLevel ?? entry.options.isolationLevel,
      readOnly: o.readOnly ?? entry.options.readOnly,
      timeoutMs: o.timeoutMs ?? entry.options.timeoutMs,
    };
    const slowMs = o.slowTransactionMs ?? entry.options.slowTransactionMs;
    if (slowMs !== undefined) this.slowMonitor = new SlowTransactionMonitor(slowMs);
    this.clock = new ConnectionClock(this, resolveIdleInTransactionMs(o.idleInTransactionMs, entry.options.idleInTransactionMs));
    this.statements = new StatementAccounting(slowMs !== undefined, this.clock);
    this.connectionHold = new ConnectionHold(entry);
    this.ownDepth = entry.insideTestTransaction ? 2 : 1;
    this.abort = new AbortState(entry.dialect, this.ownDepth);
  }

  get manager(): EntityManager {
    return (this.runner ??= bindQueryRunner(this, this.ownDepth)).manager;
  }

  /** The library's QueryRunner of this transaction, once `manager` made it. */
  get queryRunner(): BoundRunner {
    return this.runner as BoundRunner;
  }

  // ── open: the connection and BEGIN, with the first statement ──

  /** Takes the connection and sends BEGIN, once; resolves with the driver connection. */
  open(): Promise<unknown> {
    if (this.opening === undefined) {
      this.unitOfWork.noteFirstStatement(this);
      this.opening = this.begin();
    }
    return this.opening;
  }

  private async begin(): Promise<unknown> {
    const connection = await this.connectionHold.take(() => callOriginal(this.queryRunner, 'connect', []), this.unitOfWork.label);
    this.slowMonitor?.start(this);
    this.clock.acquired(this.connectionHold.acquiredAt as number, this.statements.inFlight > 0);
    // Taken after the await: V8's async frames then lead back to the application code whose query
    // took the connection, even where TypeORM awaited before asking for it (insert(), say).
    if (this.unitOfWork.guardMode(this.entry) !== 'off' || this.slowMonitor !== undefined) {
      this.connectionHold.noteSite(this.unitOfWork.owner.sites, this.slowMonitor !== undefined);
    }
    this.loss.watch(connection);
    await sendBegin(this, connection);
    this.connection = connection;
    return connection;
  }

  // ── use: statements, one at a time ──

  /**
   * Runs a statement of the runner if the unit of work is open and the connection is the caller's
   * (see `ConnectionTurns`), and counts it until answered. TypeORM awaits between taking the
   * connection and handing the statement to the driver; a COMMIT or ROLLBACK sent in that gap would
   * overtake it and leave it to run in autocommit, so the end waits for these. Awaited (not chained
   * with .then) so V8's async stack traces still lead back to the application.
   */
  async run(runner: BoundRunner, method: 'query' | 'stream', args: unknown[]): Promise<unknown> {
    let problem = this.unusable();
    if (problem !== undefined) throw problem;
    const level = levelOfCaller(this, this.turns.root);
    if (!this.turns.tryTake(level)) await this.turns.take(level);
    try {
      problem = this.unusable();
      if (problem !== undefined) throw problem;
      this.statements.begin();
      try {
        const result = await callOriginal(runner, method, args);
        if (method === 'stream') this.track(result);
        return result;
      } catch (error) {
        await this.noteFailure(error);
        throw error;
      } finally {
        this.statements.end();
      }
    } finally {
      this.turns.give();
    }
  }

  /**
   * Runs `task` (savepoint statements) holding the connection for `level`, like `run()`.
   * `allowAborted`: a ROLLBACK TO SAVEPOINT still goes to an aborted transaction.
   */
  async exclusive<T>(level: Level, use: string, allowAborted: boolean, task: (connection: unknown) => Promise<T>): Promise<T> {
    if (!this.turns.tryTake(level)) await this.turns.take(level);
    try {
      const problem = this.unusable(use, allowAborted);
      if (problem !== undefined) throw problem;
      this.statements.begin();
      try {
        return await task(await this.open());
      } catch (error) {
        await this.noteFailure(error);
        throw error;
      } finally {
        this.statements.end();
      }
    } finally {
      this.turns.give();
    }
  }

  /** Why this transaction cannot take `use` now, if it cannot. */
  unusable(use = 'a query', allowAborted = false): Error | undefined {
    if (this.unitOfWork.state !== 'open') return this.unitOfWork.finishedError(use);
    if (this.loss.lost !== undefined) return this.lostError();
    if (this.streams?.open === true) return openStreamError(this.unitOfWork.label, use);
    if (this.abort.current !== undefined && !allowAborted) return this.abort.error(use, this.unitOfWork.label);
    return undefined;
  }

  /** After a failed statement, while the connection is still its: notes whether the database aborted the transaction. */
  private async noteFailure(error: unknown): Promise<void> {
    const connection = this.connection;
    if (connection === undefined || this.loss.lost !== undefined || error instanceof TransactionalError) return;
    await this.abort.noteFailure(connection, error, this.queryRunner);
  }

  /** Tracks a stream of rows the runner returned: the connection is busy until it ends. */
  private track(stream: unknown): void {
    if (!isStream(stream)) return;
    (this.streams ??= new RowStreams()).add(stream, (error) => {
      // A failed stream is a failed statement; once the unit of work settled, the connection may serve another.
      if (this.unitOfWork.state === 'open') void this.noteFailure(error);
    });
  }

  /** Transaction events for the data source's subscribers; nothing to do (and nothing awaited) without any. */
  broadcast(event: string): Promise<void> | undefined {
    if (this.entry.dataSource.subscribers.length === 0) return undefined;
    return this.runner?.broadcaster?.broadcast(event);
  }

  /** The error for the connection lost under this transaction (see `ConnectionLossWatch`). */
  lostError(): Error {
    return lostConnectionError(this.unitOfWork.label, this.loss.lost, this.entry.dialect, this.spec, this.endSent);
  }

  // ── end: COMMIT or ROLLBACK, then release ──

  /** Commits or rolls back, then releases the connection; once. Rejects only when a commit failed. */
  end(commit: boolean): Promise<void> {
    return (this.ending ??= this.endOnce(commit));
  }

  private async endOnce(commit: boolean): Promise<void> {
    try {
      const runner = this.runner;
      if (runner === undefined) return;
      // Never queried: nothing was sent, no connection was taken.
      if (this.opening === undefined) {
        await callOriginal(runner, 'release', []);
        return;
      }
      // Set once BEGIN went through: nothing to wait for.
      let connection = this.connection;
      if (connection === undefined) {
        try {
          connection = await this.opening;
        } catch (error) {
          // The connection or its BEGIN failed; the query that triggered it already saw the error.
          await discard(this, error);
          if (commit) throw error;
          return;
        }
      }
      // No statement accepted while open may reach the driver after COMMIT/ROLLBACK (no new ones are accepted now).
      if (this.statements.inFlight > 0) await this.statements.drained();
      // Statements still waiting for their turn go on, to find the unit of work settled.
      this.turns.giveAll();
      this.clock.ending(commit);
      await endTransaction(this, connection, commit, this.streams);
    } finally {
      this.loss.unwatch();
      this.recordEnd();
    }
  }

  /** The connection was released (or discarded): counts the transaction's end. */
  private recordEnd(): void {
    this.slowMonitor?.stop();
    if (this.began) {
      if (this.committed) this.entry.counters.commits += 1;
      else this.entry.counters.rollbacks += 1;
    }
    this.clock.released(this.connectionHold.acquiredAt);
    this.connectionHold.clear();
  }
}
