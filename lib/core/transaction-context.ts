import { AsyncLocalStorage } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';
import { Logger } from '@nestjs/common';
import type { EntityManager, QueryRunner } from 'typeorm';
import { QueryFailedError } from 'typeorm';
import {
  NoTransactionError,
  TransactionalError,
  TransactionFinishedError,
  TransactionTimeoutError,
} from '../errors';
import type { GuardMode, TransactionOptions } from '../transactional.options';
import { callSite, captureStack, type StackHolder } from './call-site';
import { DEFAULT_DATA_SOURCE, type DataSourceEntry, type DataSourceRegistry } from './data-source-registry';
import type { BeginSpec } from './dialect';

export type ContextState = 'open' | 'settling' | 'committed' | 'rolledBack';
export type Outcome = 'committed' | 'rolledBack';
type Hook = () => unknown;

interface HookScope {
  commit: Hook[];
  rollback: Hook[];
}

/** The unit of work of the running async call chain. */
const current = new AsyncLocalStorage<TransactionContext>();
/** Set only while the library itself ends a source's transaction: its COMMIT/ROLLBACK may pass. */
const ending = new AsyncLocalStorage<SourceTransaction>();

const logger = new Logger('TransactionalModule');
/** The unit of work each library-made QueryRunner belongs to. */
const owners = new WeakMap<QueryRunner, TransactionContext>();

/** The unit of work the caller runs in, if any (settled ones included). */
export function currentContext(): TransactionContext | undefined {
  return current.getStore();
}

/** The unit of work a query runner belongs to, when the library made it. */
export function ownerOf(queryRunner: QueryRunner | undefined): TransactionContext | undefined {
  return queryRunner && owners.get(queryRunner);
}

/**
 * The current unit of work's manager for a data source, or the error that explains why there is none.
 * `use` names the caller in messages: `@Tx()`, `Repository<Account>.save()`.
 */
export function requireManager(dataSource: string | undefined, use: string): EntityManager {
  const ctx = current.getStore();
  if (ctx === undefined) {
    throw new NoTransactionError(
      `${use} was used outside a unit of work${at(captureStack())}. It needs the transaction of a request handled by ` +
        `TransactionalModule (not a @NoTransaction() route, and HTTP only), or of TransactionRunner.run(). ` +
        `Wrap the work in TransactionRunner.run(), or use a plain repository where no transaction is wanted.`,
    );
  }
  return ctx.manager(dataSource ?? DEFAULT_DATA_SOURCE, use);
}

function at(holder: StackHolder | undefined): string {
  const site = callSite(holder);
  return site ? ` (at ${site})` : '';
}

/**
 * One unit of work: a request, or one `TransactionRunner.run()`. Holds at most one QueryRunner per
 * data source, created on first use and connected (with BEGIN) on first query; settles exactly once.
 */
export class TransactionContext {
  state: ContextState = 'open';
  private readonly sources = new Map<string, SourceTransaction>();
  private readonly hookScopes: HookScope[] = [{ commit: [], rollback: [] }];
  private settlement?: Promise<Outcome>;
  private reason?: string;

  constructor(
    readonly registry: DataSourceRegistry,
    readonly options: TransactionOptions,
    private readonly describe: () => string,
  ) {}

  /** `POST /transfers`, or the runner's name. Computed only when a message needs it. */
  get label(): string {
    return this.describe();
  }

  /** Runs `fn` with this unit of work as the current one. */
  enter<T>(fn: () => T): T {
    return current.run(this, fn);
  }

  manager(name: string, use: string): EntityManager {
    if (this.state !== 'open') throw this.finishedError(use);
    return this.source(name, use).manager;
  }

  private source(name: string, use: string): SourceTransaction {
    let source = this.sources.get(name);
    if (source === undefined) {
      const entry = this.registry.get(name, use);
      source = new SourceTransaction(this, entry);
      this.sources.set(name, source);
    }
    return source;
  }

  guardMode(entry: DataSourceEntry): GuardMode {
    return this.options.guard ?? entry.options.guard;
  }

  /**
   * True when an acquisition from `entry`'s pool, made now, is not this unit of work's own: a second
   * connection taken while this one holds (or is about to hold) its own.
   */
  isForeignAcquisition(entry: DataSourceEntry): boolean {
    if (this.state !== 'open' || !this.registry.has(entry)) return false;
    return this.sources.get(entry.name)?.acquiring !== true;
  }

  /** Where this unit of work took its connection on a data source, if it did. */
  holderSite(name: string): string | undefined {
    return callSite(this.sources.get(name)?.holder);
  }

  afterCommit(hook: Hook): void {
    this.assertHookable('afterCommit');
    this.hookScopes[this.hookScopes.length - 1].commit.push(hook);
  }

  afterRollback(hook: Hook): void {
    this.assertHookable('afterRollback');
    this.hookScopes[this.hookScopes.length - 1].rollback.push(hook);
  }

  private assertHookable(use: string): void {
    if (this.state !== 'open') throw this.finishedError(`TransactionHost.${use}()`);
  }

  /** A savepoint started: hooks registered from now on belong to it. */
  openHookScope(): void {
    this.hookScopes.push({ commit: [], rollback: [] });
  }

  /** A savepoint ended: its hooks join the enclosing scope, or are dropped if it rolled back. */
  closeHookScope(keep: boolean): void {
    if (this.hookScopes.length === 1) return;
    const scope = this.hookScopes.pop() as HookScope;
    if (keep) {
      const parent = this.hookScopes[this.hookScopes.length - 1];
      parent.commit.push(...scope.commit);
      parent.rollback.push(...scope.rollback);
    }
  }

  /**
   * Ends the unit of work once: commit (if asked and possible) or rollback, release every connection,
   * then run the hooks. Later calls return the first call's outcome. Rejects only when COMMIT failed.
   */
  settle(commit: boolean, reason?: string): Promise<Outcome> {
    if (this.settlement === undefined) {
      this.reason = reason;
      this.settlement = this.finish(commit);
    }
    return this.settlement;
  }

  private async finish(commit: boolean): Promise<Outcome> {
    this.state = 'settling';
    const sources = [...this.sources.values()];
    let failure: unknown;
    let outcome: Outcome = 'rolledBack';
    if (commit) {
      try {
        for (const source of sources) await source.end(true);
        outcome = 'committed';
      } catch (error) {
        failure = error;
      }
    }
    // A source that already ended keeps its first outcome; the rest roll back.
    for (const source of sources) await source.end(false).catch(() => undefined);
    this.state = outcome;
    const scope = this.hookScopes[0];
    // Hooks run outside this unit of work: one that calls TransactionRunner.run() starts a fresh one.
    await current.exit(() => runHooks(outcome === 'committed' ? scope.commit : scope.rollback, outcome, this.label));
    if (failure !== undefined) throw this.explain(failure);
    return outcome;
  }

  /** A deadlock or serialization failure on one of this unit of work's data sources. */
  isRetryable(error: unknown): boolean {
    for (const source of this.sources.values()) {
      if (source.entry.dialect.isRetryable(error)) return true;
    }
    return false;
  }

  /** Turns a database timeout into a `TransactionTimeoutError`; other errors pass unchanged. */
  explain(error: unknown): unknown {
    if (error instanceof TransactionalError) return error;
    for (const source of this.sources.values()) {
      if (source.entry.dialect.isTimeout(error)) {
        return new TransactionTimeoutError(
          `A statement of ${this.label} ran longer than timeoutMs (${source.spec.timeoutMs} ms), or its transaction ` +
            `sat idle that long, and the database stopped it; the transaction was rolled back. Make the work faster, ` +
            `move slow non-database work out of the transaction, or raise @Transactional({ timeoutMs }).`,
          { cause: error },
        );
      }
    }
    return error;
  }

  /** The error for use of this unit of work after it settled (or while it settles). */
  finishedError(use: string): TransactionFinishedError {
    const done =
      this.state === 'committed' ? 'committed' : this.state === 'rolledBack' ? 'rolled back' : 'ending';
    const why = this.reason ? ` (${this.reason})` : '';
    return new TransactionFinishedError(
      `The transaction of ${this.label} was already ${done}${why} when ${use} ran${at(captureStack())}. ` +
        `Work that outlives its request or unit of work cannot use its transaction; run it in its own ` +
        `TransactionRunner.run(), or await it before the handler returns.`,
    );
  }
}

async function runHooks(hooks: Hook[], outcome: Outcome, label: string): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (error) {
      // A committed request stays committed: a hook failure is reported, not turned into an error response.
      logger.error(
        `An ${outcome === 'committed' ? 'afterCommit' : 'afterRollback'} hook of ${label} failed: ${String(error)}`,
        error instanceof Error ? error.stack : undefined,
      );
    }
  }
}

type MutableRunner = QueryRunner & { isTransactionActive: boolean; transactionDepth: number; databaseConnection?: unknown };

/**
 * The transaction of one unit of work on one data source: a QueryRunner whose connection is taken,
 * and BEGIN sent, by its first query; every path that would use it after settlement throws.
 */
class SourceTransaction {
  /** True only while this source's own QueryRunner asks the pool for its connection. */
  acquiring = false;
  /** Where the connection was taken (captured when the guard is on). */
  holder?: StackHolder;
  readonly spec: BeginSpec;
  /** TypeORM's depth for this unit of work's own level: 2 when it is a savepoint in a test's transaction. */
  private readonly depth: number;
  private runner?: MutableRunner;
  private opening?: Promise<unknown>;
  private ending?: Promise<void>;
  /** Set when the server closed the connection under the open transaction. */
  private lost?: unknown;
  private unwatch?: () => void;
  private release!: () => Promise<void>;

  constructor(
    private readonly ctx: TransactionContext,
    readonly entry: DataSourceEntry,
  ) {
    const o = ctx.options;
    this.spec = {
      isolationLevel: o.isolationLevel ?? entry.options.isolationLevel,
      readOnly: o.readOnly ?? entry.options.readOnly,
      timeoutMs: o.timeoutMs ?? entry.options.timeoutMs,
    };
    this.depth = entry.insideTestTransaction ? 2 : 1;
  }

  get manager(): EntityManager {
    return (this.runner ??= this.createRunner()).manager;
  }

  private createRunner(): MutableRunner {
    const qr = this.entry.dataSource.createQueryRunner('master') as MutableRunner;
    owners.set(qr, this.ctx);
    // TypeORM sees a transaction from the start (so save() opens no transaction of its own and
    // tx.transaction() makes savepoints); the BEGIN itself goes out with the first query.
    qr.isTransactionActive = true;
    qr.transactionDepth = this.depth;
    const connect = qr.connect.bind(qr);
    const start = qr.startTransaction.bind(qr);
    const commit = qr.commitTransaction.bind(qr);
    const rollback = qr.rollbackTransaction.bind(qr);
    this.release = qr.release.bind(qr);
    // Every way in checks the state first, and fails as a rejected promise like the call it replaces.
    const checked = <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
      (...args: A): Promise<R> => {
        const problem = this.unusable();
        return problem === undefined ? fn(...args) : Promise.reject(problem);
      };

    qr.connect = () => (this.opening ??= this.open(connect));
    qr.query = checked(qr.query.bind(qr)) as QueryRunner['query'];
    qr.stream = checked(qr.stream.bind(qr));
    // These two check TypeORM's own "released" flag before reaching qr.query.
    const manager = qr.manager;
    manager.query = checked(manager.query.bind(manager)) as EntityManager['query'];
    manager.transaction = checked(manager.transaction.bind(manager) as (...args: unknown[]) => Promise<unknown>) as EntityManager['transaction'];
    qr.startTransaction = async (isolationLevel) => {
      const problem = this.unusable();
      if (problem !== undefined) throw problem;
      this.ctx.openHookScope();
      try {
        await start(isolationLevel);
      } catch (error) {
        this.ctx.closeHookScope(false);
        throw error;
      }
    };
    qr.commitTransaction = async () => {
      const savepoint = this.assertNested('commitTransaction');
      await commit();
      if (savepoint) this.ctx.closeHookScope(true);
    };
    qr.rollbackTransaction = async () => {
      const savepoint = this.assertNested('rollbackTransaction');
      await rollback();
      if (savepoint) this.ctx.closeHookScope(false);
    };
    qr.release = async () => {
      if (ending.getStore() === this) return this.release();
      throw new TransactionalError(
        `release() was called on the query runner of ${this.ctx.label}. The library releases it when the unit of work ends.`,
      );
    };
    return qr;
  }

  /** Why this transaction cannot take a query now, if it cannot. */
  private unusable(): Error | undefined {
    if (this.ctx.state !== 'open' && ending.getStore() !== this) return this.ctx.finishedError('a query');
    if (this.lost !== undefined && ending.getStore() !== this) return this.lostError();
    return undefined;
  }

  /** Notes the server closing the connection (an idle timeout, a killed backend, a restart). */
  private watch(connection: unknown): void {
    const emitter = connection as EventEmitter;
    if (typeof emitter?.on !== 'function') return;
    const onLost = (error?: unknown) => {
      this.lost ??= error ?? new Error('the connection ended');
    };
    emitter.on('error', onLost);
    emitter.on('end', onLost);
    this.unwatch = () => {
      emitter.off('error', onLost);
      emitter.off('end', onLost);
    };
  }

  private lostError(): Error {
    const cause = this.lost;
    const reason = cause instanceof Error ? cause.message : String(cause);
    const { timeoutMs } = this.spec;
    // PostgreSQL names its idle timeout (25P03); MySQL/MariaDB just close the connection.
    if (timeoutMs !== undefined && (this.entry.dialect.isTimeout(cause) || this.entry.dialect.name === 'mysql')) {
      return new TransactionTimeoutError(
        `The database closed the connection of ${this.ctx.label} (${reason}): its transaction sat idle longer than ` +
          `timeoutMs (${timeoutMs} ms), and was rolled back. Do slow non-database work before the first query or ` +
          `after the response (an afterCommit hook), or raise @Transactional({ timeoutMs }).`,
        { cause },
      );
    }
    return new TransactionalError(
      `The connection of ${this.ctx.label} was lost while its transaction was open (${reason}); the database ` +
        `rolled the transaction back. The request can be retried once the database is reachable.`,
      { cause },
    );
  }

  /** True for a savepoint; throws when application code tries to end the unit of work's own transaction. */
  private assertNested(method: string): boolean {
    if (ending.getStore() === this) return false;
    const problem = this.unusable();
    if (problem !== undefined) throw problem;
    if ((this.runner as MutableRunner).transactionDepth > this.depth) return true;
    throw new TransactionalError(
      `${method}() was called on the query runner of ${this.ctx.label}. The library commits or rolls back ` +
        `the unit of work when it ends; throw to roll back, or use tx.transaction() for a savepoint.`,
    );
  }

  private async open(connect: () => Promise<unknown>): Promise<unknown> {
    let acquisition: Promise<unknown>;
    // The driver's acquisition runs synchronously inside connect(): the guard sees the flag.
    this.acquiring = true;
    try {
      acquisition = connect();
    } finally {
      this.acquiring = false;
    }
    const connection = await acquisition;
    // Taken after the await: V8's async frames then lead back to the application code whose query
    // took the connection, even where TypeORM awaited before asking for it (insert(), say).
    if (this.ctx.guardMode(this.entry) !== 'off') this.holder = captureStack();
    this.watch(connection);
    // In a test's transaction, TypeORM's own savepoint name for depth 1 is the one COMMIT/ROLLBACK will end.
    const begin = this.depth === 1 ? this.entry.dialect.beginStatements(connection, this.spec) : ['SAVEPOINT typeorm_1'];
    await this.send(connection, begin);
    return connection;
  }

  private async send(connection: unknown, statements: string[]): Promise<void> {
    const { dialect, dataSource } = this.entry;
    for (const sql of statements) {
      dataSource.logger.logQuery(sql, undefined, this.runner);
      try {
        await dialect.send(connection, sql);
      } catch (error) {
        dataSource.logger.logQueryError(error as Error, sql, undefined, this.runner);
        throw new QueryFailedError(sql, undefined, error as Error);
      }
    }
  }

  /** Commits or rolls back, then releases the connection; once. Rejects only when a commit failed. */
  end(commit: boolean): Promise<void> {
    return (this.ending ??= ending.run(this, () => this.finish(commit).finally(() => this.unwatch?.())));
  }

  private async finish(commit: boolean): Promise<void> {
    const qr = this.runner;
    if (qr === undefined) return;
    if (this.opening === undefined) return this.release(); // never queried: nothing was sent
    let connection: unknown;
    try {
      connection = await this.opening;
    } catch (error) {
      // The connection or its BEGIN failed; the query that triggered it already saw the error.
      await this.discard(error);
      if (commit) throw error;
      return;
    }
    if (this.lost !== undefined) {
      // The server already ended the session, and with it the transaction.
      await this.discard(this.lost);
      if (commit) throw this.lostError();
      return;
    }
    // Savepoints left open end with the transaction.
    qr.transactionDepth = this.depth;
    try {
      await (commit ? qr.commitTransaction() : qr.rollbackTransaction());
    } catch (error) {
      if (!commit) return this.discard(error);
      // A failed COMMIT (a deferred constraint, say): make sure nothing stays open, then report it.
      try {
        await qr.rollbackTransaction();
      } catch (rollbackError) {
        await this.discard(rollbackError);
        throw error;
      }
      await this.close(connection);
      throw error;
    }
    await this.close(connection);
  }

  private async close(connection: unknown): Promise<void> {
    try {
      await this.send(connection, this.entry.dialect.endStatements(connection, this.spec));
    } catch (error) {
      return this.discard(error);
    }
    await this.release();
  }

  /** Gives the connection up without returning it to the pool: its state is unknown. */
  private async discard(cause: unknown): Promise<void> {
    const qr = this.runner as MutableRunner;
    if (qr.databaseConnection === undefined) return this.release();
    await this.entry.dialect.destroy(qr, cause);
  }
}
