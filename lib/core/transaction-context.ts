import type { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { Logger } from '@nestjs/common';
import type { EntityManager, QueryRunner } from 'typeorm';
import { QueryFailedError } from 'typeorm';
import type { RunnerInternals } from '../compat/typeorm';
import {
  ConnectionAcquisitionError,
  NoTransactionError,
  OpenStreamError,
  PartialCommitError,
  TransactionalError,
  TransactionAbortedError,
  TransactionFinishedError,
  TransactionTimeoutError,
} from '../errors';
import type { GuardMode, TransactionOptions } from '../transactional.options';
import { callSite, captureStack, type StackHolder } from './call-site';
import { ConnectionClock } from './connection-clock'; // idle in transaction: hold-time accounting and gap reports
import { ConnectionTurns, type Level } from './connection-turns';
import { DEFAULT_DATA_SOURCE, type DataSourceEntry, type DataSourceRegistry } from './data-source-registry';
import type { BeginSpec } from './dialect';
import { resolveIdleInTransactionMs } from './idle-threshold';
import { abortAdvice, describeAbort, type Abort } from './transaction-abort';
import { RowStreams } from './row-streams';
import { runInSavepoint } from './savepoints';
import { type HookScope, mergeHooks, SavepointScope } from './savepoint-scope';
import { unitOfWorkStorage as current } from './unit-of-work-storage';

export type ContextState = 'open' | 'settling' | 'committed' | 'rolledBack';
export type Outcome = 'committed' | 'rolledBack';
type Hook = () => unknown;
/** A savepoint of one of this module's units of work. */
export type Savepoint = SavepointScope<TransactionContext, SourceTransaction>;

/** A call the guard already reported in 'warn' mode, going through: the driver must not report it again. */
class ReportedCall {
  constructor(readonly ctx: TransactionContext) {}
}

const logger = new Logger('TransactionalModule');
const COMMITTED: Promise<Outcome> = Promise.resolve('committed');
const ROLLED_BACK: Promise<Outcome> = Promise.resolve('rolledBack');
/** On each library-made QueryRunner and its manager: the transaction they belong to. */
const SOURCE = Symbol('nestjs-request-transaction:source');
const NO_SOURCES: readonly never[] = [];

/** The unit of work the caller runs in, if any (settled ones included). */
export function currentContext(): TransactionContext | undefined {
  const store = current.getStore();
  if (store instanceof TransactionContext) return store;
  return store instanceof SavepointScope || store instanceof ReportedCall ? (store.ctx as TransactionContext) : undefined;
}

/** Runs `fn` as a call the guard already reported. */
export function runReported<T>(ctx: TransactionContext, fn: () => T): T {
  return current.run(new ReportedCall(ctx), fn);
}

/** Whether the caller runs inside `runReported()`. */
export function isReported(): boolean {
  return current.getStore() instanceof ReportedCall;
}

/** The unit of work a query runner belongs to, when the library made it. */
export function ownerOf(queryRunner: QueryRunner | undefined): TransactionContext | undefined {
  return (queryRunner as Partial<Patched> | undefined)?.[SOURCE]?.ctx;
}

/**
 * The current unit of work's manager for a data source, or the error that explains why there is none.
 * `use` names the caller in messages: `@Tx()`, `Repository<Account>.save()`.
 */
export function requireManager(dataSource: string | undefined, use: string): EntityManager {
  const ctx = currentContext();
  if (ctx === undefined) {
    throw new NoTransactionError(
      `${use} was used outside a unit of work${at(captureStack())}. It needs the transaction of a request handled by ` +
        `TransactionalModule (not a @NoTransaction() route), or of TransactionRunner.run(). ` +
        `Put @Transactional() on the method, wrap the work in TransactionRunner.run(), or use a plain repository where no transaction is wanted.`,
    );
  }
  return ctx.manager(dataSource ?? DEFAULT_DATA_SOURCE, use);
}

function at(holder: StackHolder | undefined): string {
  const site = callSite(holder);
  return site ? ` (at ${site})` : '';
}

/** What a unit of work runs for: a request, or one `TransactionRunner.run()`. */
export interface UnitOfWorkOwner {
  /** `POST /transfers`, or the runner's name: computed only when a message needs it. */
  describe(): string;
  /** Runs the work (one attempt of it) with `ctx` as the current unit of work. */
  attempt(ctx: TransactionContext): unknown;
  /** False once running the work again is no longer safe (a response already went out). */
  canRetry?(): boolean;
  /**
   * Where units of work of this kind (one route) took their connection, by data source: capturing a
   * stack costs tens of microseconds, so a route captures it on its first request, and later requests
   * name that site. Without it, every unit of work captures its own.
   */
  readonly sites?: Map<string, string | null>;
  /**
   * Called once, before the unit of work first holds something it would have to roll back (a data
   * source's transaction, a hook). A request starts watching for its client's disconnect here; it
   * may settle `ctx` on the spot, and the caller then fails with the finished error.
   */
  engaged?(ctx: TransactionContext): void;
}

/**
 * One unit of work: a request, or one `TransactionRunner.run()`. Holds at most one QueryRunner per
 * data source, created on first use and connected (with BEGIN) on first query; settles exactly once.
 */
export class TransactionContext {
  state: ContextState = 'open';
  /** Created with the first data source: most requests that never query allocate none. */
  private sources?: Map<string, SourceTransaction>;
  /** The data sources in the order of their first statement: the order they commit in. */
  private used?: SourceTransaction[];
  /** Created on the first hook: most units of work register none. Savepoints hold their own. */
  private hooks?: HookScope;
  private settlement?: Promise<Outcome>;
  private reason?: string;

  constructor(
    readonly registry: DataSourceRegistry,
    readonly options: TransactionOptions,
    readonly owner: UnitOfWorkOwner,
  ) {
    registry.counters.openUnitsOfWork += 1;
  }

  /**
   * Why the unit of work was ended before its work did (the client disconnected, the response stream
   * was unsubscribed), once it was: work of it still running must not go on in a fresh one.
   */
  get cancelled(): string | undefined {
    return this.state === 'open' ? undefined : this.reason;
  }

  /** `POST /transfers`, or the runner's name. Computed only when a message needs it. */
  get label(): string {
    return this.owner.describe();
  }

  /** Runs the owner's work with this unit of work as the current one. */
  enter(): unknown {
    return current.run(this, attemptOf, this);
  }

  manager(name: string, use: string): EntityManager {
    if (this.state !== 'open') throw this.finishedError(use);
    return this.source(name, use).manager;
  }

  private source(name: string, use: string): SourceTransaction {
    let source = this.sources?.get(name);
    if (source === undefined) {
      const entry = this.registry.get(name, use);
      this.engage(use);
      source = new SourceTransaction(this, entry);
      (this.sources ??= new Map()).set(name, source);
    }
    return source;
  }

  /** Tells the owner before the first data source or hook; fails if that settled the unit of work. */
  private engage(use: string): void {
    if (!this.untouched) return;
    this.owner.engaged?.(this);
    if (this.state !== 'open') throw this.finishedError(use);
  }

  /** The data sources this unit of work has used. */
  opened(): Iterable<SourceTransaction> {
    return this.sources?.values() ?? NO_SOURCES;
  }

  guardMode(entry: DataSourceEntry): GuardMode {
    return this.options.guard ?? entry.options.guard;
  }

  afterCommit(hook: Hook): void {
    this.hookScope('afterCommit').commit.push(hook);
  }

  afterRollback(hook: Hook): void {
    this.hookScope('afterRollback').rollback.push(hook);
  }

  /** The hooks of the caller's scope: the savepoint whose callback runs, or the unit of work itself. */
  private hookScope(use: string): HookScope {
    if (this.state !== 'open') throw this.finishedError(`TransactionHost.${use}()`);
    const savepoint = this.savepointOfCaller();
    if (savepoint !== undefined) return (savepoint.hooks ??= { commit: [], rollback: [] });
    if (this.hooks === undefined) {
      this.engage(`TransactionHost.${use}()`);
      this.hooks = { commit: [], rollback: [] };
    }
    return this.hooks;
  }

  /** The innermost open savepoint of this unit of work whose callback the caller runs in. */
  private savepointOfCaller(): Savepoint | undefined {
    const store = current.getStore();
    return store instanceof SavepointScope && store.ctx === this ? (store as Savepoint).innermostOpen() : undefined;
  }

  /** A savepoint ended: its hooks join the scope around it, or are dropped if it rolled back. */
  closeScope(savepoint: Savepoint, keep: boolean): void {
    if (!keep || savepoint.hooks === undefined) return;
    const outer = savepoint.enclosing?.innermostOpen();
    mergeHooks(outer !== undefined ? (outer.hooks ??= { commit: [], rollback: [] }) : (this.hooks ??= { commit: [], rollback: [] }), savepoint.hooks);
  }

  /** A data source's first statement: data sources commit in this order. */
  noteUsed(source: SourceTransaction): void {
    (this.used ??= []).push(source);
  }

  /** Every data source this unit of work holds, those that ran statements first, in the order they did. */
  private commitOrder(): Iterable<SourceTransaction> {
    const sources = this.sources;
    if (sources === undefined) return NO_SOURCES;
    const used = this.used;
    if (used === undefined || sources.size === 1 || used.length === sources.size) return used ?? sources.values();
    return [...used, ...[...sources.values()].filter((source) => !used.includes(source))];
  }

  /**
   * Ends the unit of work once: commit (if asked and possible) or rollback, release every connection,
   * then run the hooks. Later calls return the first call's outcome. Rejects only when COMMIT failed.
   */
  settle(commit: boolean, reason?: string): Promise<Outcome> {
    if (this.settlement === undefined) {
      this.reason = reason;
      this.settlement = this.untouched ? this.finishUntouched(commit) : this.finish(commit);
    }
    return this.settlement;
  }

  /**
   * Commits at once when nothing asked for a connection and no hook was registered (nothing to send,
   * release or run): true if it did. False when there is work to end, or the unit of work already settled.
   */
  commitUntouched(): boolean {
    if (this.settlement !== undefined || !this.untouched) return false;
    void this.settle(true);
    return true;
  }

  /** Nothing asked for a connection and no hook was registered: there is nothing to send, release or run. */
  private get untouched(): boolean {
    return this.sources === undefined && this.hooks === undefined;
  }

  private finishUntouched(commit: boolean): Promise<Outcome> {
    this.state = commit ? 'committed' : 'rolledBack';
    this.registry.counters.openUnitsOfWork -= 1;
    return commit ? COMMITTED : ROLLED_BACK;
  }

  private async finish(commit: boolean): Promise<Outcome> {
    this.state = 'settling';
    let failure: unknown;
    let outcome: Outcome = 'rolledBack';
    if (commit) {
      const committed: string[] = [];
      let ending: SourceTransaction | undefined;
      try {
        for (ending of this.commitOrder()) {
          await ending.end(true);
          if (ending.sentCommit) committed.push(ending.entry.name);
        }
        outcome = 'committed';
      } catch (error) {
        failure = committed.length > 0 ? this.partialCommit(committed, ending as SourceTransaction, error) : error;
      }
    }
    if (outcome === 'rolledBack') {
      // A source that already ended keeps its first outcome; the rest roll back.
      for (const source of this.opened()) await source.end(false).catch(() => undefined);
    }
    this.state = outcome;
    this.registry.counters.openUnitsOfWork -= 1;
    const scope = this.hooks;
    const hooks = outcome === 'committed' ? scope?.commit : scope?.rollback;
    // Hooks run outside this unit of work: one that calls TransactionRunner.run() starts a fresh one.
    if (hooks !== undefined && hooks.length > 0) await current.exit(() => runHooks(hooks, outcome, this));
    if (failure !== undefined) throw this.explain(failure);
    return outcome;
  }

  /**
   * No two-phase commit: data sources that committed before `failed` keep their work. Logged, since
   * the client learns only that the request failed.
   */
  private partialCommit(committed: string[], failed: SourceTransaction, cause: unknown): PartialCommitError {
    const names = committed.map((name) => `'${name}'`).join(', ');
    const reason = cause instanceof Error ? cause.message : String(cause);
    const message =
      `${this.label} committed on data source ${names}, then the COMMIT on data source '${failed.entry.name}' ` +
      `failed (${reason}) and its work was rolled back. There is no two-phase commit across data sources: the work ` +
      `on ${names} stays committed. Make the work on the later data sources safe to repeat, or keep what must be ` +
      `atomic on one data source.`;
    logger.error(message);
    return new PartialCommitError(message, committed, failed.entry.name, { cause });
  }

  /**
   * A deadlock or serialization failure on one of this unit of work's data sources, or a transaction
   * the database aborted for one (`TransactionAbortedError`): the whole unit of work may succeed if run again.
   */
  isRetryable(error: unknown): boolean {
    const cause = error instanceof TransactionAbortedError ? error.cause : error;
    for (const source of this.opened()) {
      if (source.entry.dialect.isRetryable(cause)) return true;
    }
    return false;
  }

  /**
   * Turns a database timeout into a `TransactionTimeoutError`, and the failure of a statement whose
   * connection ended under it into the lost-connection error; other errors pass unchanged.
   */
  explain(error: unknown): unknown {
    if (error instanceof TransactionalError) return error;
    for (const source of this.opened()) {
      const lost = source.lostUnder(error);
      if (lost !== undefined) return lost;
    }
    for (const source of this.opened()) {
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

function attemptOf(ctx: TransactionContext): unknown {
  return ctx.owner.attempt(ctx);
}

async function runHooks(hooks: Hook[], outcome: Outcome, ctx: TransactionContext): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (error) {
      // A committed request stays committed: a hook failure is reported, not turned into an error response.
      logger.error(
        `An ${outcome === 'committed' ? 'afterCommit' : 'afterRollback'} hook of ${ctx.label} failed: ${String(error)}`,
        error instanceof Error ? error.stack : undefined,
      );
    }
  }
}

// TypeORM's query runner fields the unit of work keeps in step (lib/compat/typeorm.ts; checked at bootstrap).
type Patched = RunnerInternals & { [SOURCE]: SourceTransaction };
type PatchedManager = EntityManager & { [SOURCE]: SourceTransaction };
type Method = (...args: unknown[]) => Promise<unknown>;

/** On the prototypes `patch()` makes: the prototype they stand in front of. */
const BASE = Symbol('nestjs-request-transaction:base');
type PatchedPrototype = Record<string | symbol, unknown> & { [BASE]: Record<string, Method> };

/** The own implementation of `name` of the class the library patched `target` from, called on `target`. */
function original(target: object, name: string, args: unknown[]): Promise<unknown> {
  return (Object.getPrototypeOf(target) as PatchedPrototype)[BASE][name].apply(target, args);
}

/** By original prototype (a driver's QueryRunner class, EntityManager), the patched one in front of it. */
const patchedPrototypes = new WeakMap<object, WeakMap<object, object>>();

/**
 * Gives `target` the methods of `methods` in place of its class's: its prototype becomes one made once
 * per class (and set of methods), inheriting from the class's, so a request copies no methods onto
 * its objects and every patched object of a class keeps one shape.
 */
function patch(target: object, methods: object): void {
  const base = Object.getPrototypeOf(target) as object;
  let byMethods = patchedPrototypes.get(base);
  if (byMethods === undefined) patchedPrototypes.set(base, (byMethods = new WeakMap()));
  let prototype = byMethods.get(methods);
  if (prototype === undefined) {
    const descriptors = Object.getOwnPropertyDescriptors(methods);
    for (const descriptor of Object.values(descriptors)) descriptor.enumerable = false;
    prototype = Object.create(base, descriptors) as PatchedPrototype;
    Object.defineProperty(prototype, BASE, { value: base });
    byMethods.set(methods, prototype);
  }
  Object.setPrototypeOf(target, prototype);
}

/**
 * The methods every library-made QueryRunner (and its manager) gets instead of its own: shared
 * functions that find their transaction through `this`, so a request allocates no closures for them.
 * Each checks the transaction first and fails as a rejected promise, like the call it replaces.
 */
const runnerMethods = {
  connect(this: Patched) {
    return this[SOURCE].connect();
  },
  query(this: Patched, ...args: unknown[]) {
    return this[SOURCE].run(this, 'query', args);
  },
  stream(this: Patched, ...args: unknown[]) {
    return this[SOURCE].run(this, 'stream', args);
  },
  startTransaction(this: Patched) {
    return this[SOURCE].manualSavepoint('startTransaction');
  },
  commitTransaction(this: Patched) {
    return this[SOURCE].manualSavepoint('commitTransaction');
  },
  rollbackTransaction(this: Patched) {
    return this[SOURCE].manualSavepoint('rollbackTransaction');
  },
  /** TypeORM's pool shutdown releases every runner in use: end the unit of work, then give the connection back. */
  async release(this: Patched) {
    await this[SOURCE].ctx.settle(false, 'its query runner was released').catch(() => undefined);
  },
};

/** TypeORM checks its own "released" flag in these two before they reach `query`. */
const managerMethods = {
  query(this: PatchedManager, ...args: unknown[]) {
    const problem = this[SOURCE].unusable();
    return problem === undefined ? original(this, 'query', args) : Promise.reject(problem);
  },
  transaction(this: PatchedManager, ...args: unknown[]) {
    const problem = this[SOURCE].unusable('tx.transaction()');
    return problem === undefined ? runInSavepoint(this[SOURCE], args) : Promise.reject(problem);
  },
};

/** On a driver connection the library took: the transaction holding it now, null between two. */
const HOLDER = Symbol('nestjs-request-transaction:holder');
type Watched = EventEmitter & { [HOLDER]?: SourceTransaction | null };

function onConnectionLost(this: Watched, error?: unknown): void {
  this[HOLDER]?.noteLost(error);
}

/**
 * The transaction of one unit of work on one data source: a QueryRunner whose connection is taken,
 * and BEGIN sent, by its first query; every path that would use it after settlement fails.
 */
export class SourceTransaction {
  /** True only while this source's own QueryRunner asks the pool for its connection. */
  acquiring = false;
  /** True from the pool's acquisition until it answered: the connection is being taken. */
  private waiting = false;
  /** Whose statement goes to the connection next: one at a time, savepoints one after another. */
  readonly turns = new ConnectionTurns();
  /** Set when the database aborted the transaction or one of its savepoints (see `noteFailure()`). */
  private abort?: Abort;
  /** Streams of rows read through the connection: it is busy until they end or their reader closes them. */
  private streams?: RowStreams;
  /** Where the connection was taken (captured when the guard is on, or slowTransactionMs set). */
  private holder?: StackHolder;
  /** Where this route's first request took its connection, when this one captured none. */
  private routeSite?: string | null;
  readonly spec: BeginSpec;
  /** TypeORM's depth for this unit of work's own level: 2 when it is a savepoint in a test's transaction. */
  private readonly depth: number;
  private runner?: Patched;
  private opening?: Promise<unknown>;
  /** The driver connection, once its BEGIN went through. */
  private connection?: unknown;
  private ending?: Promise<void>;
  /** Set when the server closed the connection under the open transaction. */
  private lost?: unknown;
  /** Called when the connection is lost: `closeStreams()` stops waiting then. */
  private onLost?: () => void;
  /** The connection `watch()` reports on while this transaction holds it. */
  private watched?: Watched;
  /** Statements accepted while open and not yet answered; see `run()`. */
  private inFlight = 0;
  private drained?: () => void;
  /** `performance.now()` when the connection came from the pool; undefined when none was taken. */
  private acquiredAt?: number;
  private began = false;
  private committed = false;
  /** Which end statement went out, once it did: a connection lost after a COMMIT leaves its outcome unknown. */
  private endSent?: 'COMMIT' | 'ROLLBACK';
  /** Set with `slowTransactionMs`: the warning's timer. */
  private readonly slowMs?: number;
  private slowTimer?: NodeJS.Timeout;
  /** Time in the database vs idle in transaction, per route; `idleInTransactionMs` gaps (see connection-clock.ts). */
  private readonly clock: ConnectionClock;

  constructor(
    readonly ctx: TransactionContext,
    readonly entry: DataSourceEntry,
  ) {
    const o = ctx.options;
    this.spec = {
      isolationLevel: o.isolationLevel ?? entry.options.isolationLevel,
      readOnly: o.readOnly ?? entry.options.readOnly,
      timeoutMs: o.timeoutMs ?? entry.options.timeoutMs,
    };
    this.slowMs = o.slowTransactionMs ?? entry.options.slowTransactionMs;
    this.clock = new ConnectionClock(this, resolveIdleInTransactionMs(o.idleInTransactionMs, entry.options.idleInTransactionMs));
    this.depth = entry.insideTestTransaction ? 2 : 1;
  }

  get manager(): EntityManager {
    return (this.runner ??= this.createRunner()).manager;
  }

  private createRunner(): Patched {
    const qr = this.entry.dataSource.createQueryRunner('master') as Patched;
    qr[SOURCE] = this;
    // TypeORM sees a transaction from the start (so save() opens no transaction of its own and
    // tx.transaction() makes savepoints); the BEGIN itself goes out with the first query.
    qr.isTransactionActive = true;
    qr.transactionDepth = this.depth;
    patch(qr, runnerMethods);
    const manager = qr.manager as PatchedManager;
    manager[SOURCE] = this;
    patch(manager, managerMethods);
    return qr;
  }

  connect(): Promise<unknown> {
    if (this.opening === undefined) {
      this.ctx.noteUsed(this);
      this.opening = this.open();
    }
    return this.opening;
  }

  /** Whether this transaction's COMMIT went through. */
  get sentCommit(): boolean {
    return this.committed;
  }

  /**
   * Runs a statement of the runner if the unit of work is open and the connection is the caller's
   * (see `ConnectionTurns`), and counts it until answered. TypeORM awaits between taking the
   * connection and handing the statement to the driver; a COMMIT or ROLLBACK sent in that gap would
   * overtake it and leave it to run in autocommit, so the end waits for these. Awaited (not chained
   * with .then) so V8's async stack traces still lead back to the application.
   */
  async run(runner: Patched, method: 'query' | 'stream', args: unknown[]): Promise<unknown> {
    let problem = this.unusable();
    if (problem !== undefined) throw problem;
    const level = this.levelOfCaller();
    if (!this.turns.tryTake(level)) await this.turns.take(level);
    try {
      problem = this.unusable();
      if (problem !== undefined) throw problem;
      this.beginStatement();
      try {
        const result = await original(runner, method, args);
        if (method === 'stream') this.track(result);
        return result;
      } catch (error) {
        await this.noteFailure(error);
        throw error;
      } finally {
        this.endStatement();
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
      this.beginStatement();
      try {
        return await task(await this.connect());
      } catch (error) {
        await this.noteFailure(error);
        throw error;
      } finally {
        this.endStatement();
      }
    } finally {
      this.turns.give();
    }
  }

  private beginStatement(): void {
    this.clock.begin(this.inFlight++ === 0); // idle in transaction
  }

  private endStatement(): void {
    const last = --this.inFlight === 0;
    this.clock.end(last); // idle in transaction
    if (last) this.drained?.();
  }

  /** The level of this connection the caller's statements belong to: its savepoint, or the transaction. */
  private levelOfCaller(): Level {
    const store = current.getStore();
    if (!(store instanceof SavepointScope)) return this.turns.root;
    return (store as Savepoint).on(this) ?? this.turns.root;
  }

  /**
   * After a failed statement: asks the dialect what the database did to the transaction and, if it
   * aborted it (or the savepoint the statement ran in), refuses every later statement until a ROLLBACK
   * (TO SAVEPOINT) clears it. Runs while the connection is still the failed statement's, so nothing
   * else reaches the database before this is known.
   */
  private async noteFailure(error: unknown): Promise<void> {
    const connection = this.connection;
    if (connection === undefined || this.lost !== undefined || error instanceof TransactionalError) return;
    if (this.abort?.ended === true) return;
    const site = captureStack();
    const scope = await this.entry.dialect.afterFailure(connection, error);
    if (scope === 'statement' || (this.abort !== undefined && scope === 'level')) return;
    const depth = scope === 'transaction' ? this.depth : (this.runner as Patched).transactionDepth;
    this.abort = { depth, ended: scope === 'transaction', cause: error, site };
  }

  /** Whether the savepoint opened at `depth` (or the transaction, or any savepoint in it) is aborted. */
  abortedWithin(depth: number): boolean {
    return this.abort !== undefined && (this.abort.ended || this.abort.depth > depth);
  }

  /** The error for `use` refused in an aborted transaction or savepoint. */
  abortedError(use: string): TransactionAbortedError {
    const abort = this.abort as Abort;
    const { dialect } = this.entry;
    const database = dialect.name === 'postgres' ? 'PostgreSQL' : 'MySQL/MariaDB';
    const whole = abort.ended || abort.depth <= this.depth;
    const end = whole
      ? 'it ends in a ROLLBACK, and the unit of work fails'
      : 'the savepoint is rolled back, and tx.transaction() rejects';
    return new TransactionAbortedError(
      `${use} in the transaction of ${this.ctx.label} was refused${use === 'COMMIT' ? '' : at(captureStack())}: ` +
        `${describeAbort(abort, database, whole)}. Nothing more can run in it, even though that error was caught: ` +
        `${end}. ${abortAdvice(dialect.isRetryable(abort.cause), abort.ended)}`,
      { cause: abort.cause },
    );
  }

  /**
   * Tracks a stream of rows the runner returned: the connection is busy until it ends. Its statement
   * failing in the database is a failed statement like any other (see `noteFailure()`).
   */
  private track(stream: unknown): void {
    if (typeof (stream as Readable | undefined)?.on !== 'function') return;
    (this.streams ??= new RowStreams()).add(stream as Readable, (error) => {
      // Once the unit of work ends, its connection may already serve another one.
      if (this.ctx.state === 'open') void this.noteFailure(error);
    });
  }

  /**
   * Destroys the streams still open with `error`, and waits until they closed (or the connection was
   * lost): a reader waiting on one then gets the error instead of waiting forever.
   */
  private async closeStreams(error: OpenStreamError): Promise<void> {
    const closing = (this.streams as RowStreams).destroyAll(error);
    if (this.lost === undefined) await Promise.race([closing, new Promise<void>((resolve) => (this.onLost = resolve))]);
    this.onLost = undefined;
  }

  private openStreamError(use: string): OpenStreamError {
    const ending = use === 'COMMIT' || use === 'ROLLBACK';
    return new OpenStreamError(
      `${use} in the transaction of ${this.ctx.label}${ending ? '' : ' was refused'}${at(captureStack())}: a stream ` +
        `of rows read through its connection is still open, and the connection is busy until the stream is read ` +
        `to its end. ` +
        (ending
          ? `A stream returned as the response (StreamableFile, a piped Readable) would be read only after the unit of ` +
            `work ended, so it cannot come from its transaction: the unit of work was rolled back and its connection ` +
            `closed. `
          : `A query made while iterating over the stream's rows would wait for the stream forever (the rows wait ` +
            `for the query). `) +
        `Read the rows to their end inside the unit of work before anything else (for await … of stream), collect ` +
        `them first, or stream from a @NoTransaction() route with a QueryRunner of its own.`,
    );
  }

  /** SAVEPOINT at TypeORM's next depth, which goes up by one; returns the depth it was opened at. */
  async openSavepoint(connection: unknown): Promise<number> {
    const qr = this.runner as Patched;
    const depth = qr.transactionDepth;
    await this.statement(connection, `SAVEPOINT typeorm_${depth}`);
    qr.transactionDepth = depth + 1;
    return depth;
  }

  /**
   * Ends the savepoint opened at `depth` and any opened in it: RELEASE (refused when it is aborted),
   * or ROLLBACK TO, which clears its abort. Nothing is sent once the server ended the transaction.
   */
  async closeSavepoint(connection: unknown, depth: number, keep: boolean): Promise<void> {
    const qr = this.runner as Patched;
    if (keep) {
      if (this.abortedWithin(depth)) throw this.abortedError('RELEASE SAVEPOINT');
      await this.statement(connection, `RELEASE SAVEPOINT typeorm_${depth}`);
    } else if (this.abort?.ended !== true) {
      try {
        await this.statement(connection, `ROLLBACK TO SAVEPOINT typeorm_${depth}`);
      } catch (error) {
        // The savepoint could not be undone: nothing in the transaction can be trusted any more.
        this.abort = { depth: this.depth, ended: false, cause: error, site: captureStack() };
        throw error;
      }
      if (this.abort !== undefined && this.abort.depth > depth) this.abort = undefined;
    }
    qr.transactionDepth = depth;
  }

  /** `startTransaction()`, `commitTransaction()`, `rollbackTransaction()` of the runner, called by application code. */
  async manualSavepoint(method: 'startTransaction' | 'commitTransaction' | 'rollbackTransaction'): Promise<void> {
    if (method !== 'startTransaction') this.assertSavepoint(method);
    const event = { startTransaction: 'TransactionStart', commitTransaction: 'TransactionCommit', rollbackTransaction: 'TransactionRollback' }[method];
    await this.broadcast(`Before${event}`);
    const depth = (this.runner as Patched).transactionDepth - 1;
    await this.exclusive(this.levelOfCaller(), `queryRunner.${method}()`, method === 'rollbackTransaction', async (connection) => {
      if (method === 'startTransaction') await this.openSavepoint(connection);
      else await this.closeSavepoint(connection, depth, method === 'commitTransaction');
    });
    await this.broadcast(`After${event}`);
  }

  private settled(): Promise<void> {
    return new Promise((resolve) => {
      this.drained = resolve;
    });
  }

  /** Why this transaction cannot take `use` now, if it cannot. */
  unusable(use = 'a query', allowAborted = false): Error | undefined {
    if (this.ctx.state !== 'open') return this.ctx.finishedError(use);
    if (this.lost !== undefined) return this.lostError();
    if (this.streams?.open === true) return this.openStreamError(use);
    if (this.abort !== undefined && !allowAborted) return this.abortedError(use);
    return undefined;
  }

  /** Application code may end savepoints it opened, never the unit of work's own transaction. */
  private assertSavepoint(method: string): void {
    if ((this.runner as Patched).transactionDepth > this.depth) return;
    throw new TransactionalError(
      `${method}() was called on the query runner of ${this.ctx.label}. The library commits or rolls back ` +
        `the unit of work when it ends; throw to roll back, or use tx.transaction() for a savepoint.`,
    );
  }

  /**
   * Notes the server closing the connection (an idle timeout, a killed backend, a restart) while this
   * transaction holds it. The listeners go on a connection once, the first time the library takes it,
   * and report to whichever transaction holds it then: a request adds and removes none.
   */
  private watch(connection: unknown): void {
    const watched = connection as Watched;
    if (typeof watched?.on !== 'function') return;
    if (watched[HOLDER] === undefined) {
      watched.on('error', onConnectionLost);
      watched.on('end', onConnectionLost);
    }
    watched[HOLDER] = this;
    this.watched = watched;
  }

  /** Called by the connection's listeners (see `watch()`). */
  noteLost(error: unknown): void {
    this.lost ??= error ?? new Error('the connection ended');
    this.onLost?.();
  }

  private unwatch(): void {
    const watched = this.watched;
    if (watched === undefined) return;
    this.watched = undefined;
    if (watched[HOLDER] === this) watched[HOLDER] = null;
  }

  /**
   * The lost-connection error, when `error` failed a statement of this transaction whose connection has
   * ended since (the server or a proxy between closed it): the error alone may not say so (PgBouncer's
   * own message, a driver's refusal).
   */
  lostUnder(error: unknown): Error | undefined {
    if (this.lost === undefined) return undefined;
    if (this.entry.dialect.isTimeout(error) || this.entry.dialect.isTimeout(this.lost)) return undefined;
    // The statement's failure carries the server's reason; the end of the connection that followed, seldom.
    this.lost = error;
    return this.lostError();
  }

  private brokenError(cause: unknown): TransactionalError {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return new TransactionalError(
      `The connection of ${this.ctx.label} had broken before its transaction began (${reason}): none of its work ` +
        `reached the database, and the connection was discarded. The request can be retried once the database is reachable.`,
      { cause },
    );
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
    if (this.endSent === 'COMMIT') {
      return new TransactionalError(
        `The connection of ${this.ctx.label} was lost while its COMMIT was on the way (${reason}): the database ` +
          `may or may not have committed the transaction. Check what was written before retrying the request.`,
        { cause },
      );
    }
    return new TransactionalError(
      `The connection of ${this.ctx.label} was lost while its transaction was open (${reason}); the database ` +
        `rolled the transaction back. The request can be retried once the database is reachable.`,
      { cause },
    );
  }

  private async open(): Promise<unknown> {
    const connection = await this.acquire();
    // Taken after the await: V8's async frames then lead back to the application code whose query
    // took the connection, even where TypeORM awaited before asking for it (insert(), say).
    if (this.ctx.guardMode(this.entry) !== 'off' || this.slowMs !== undefined) this.noteHolder();
    this.watch(connection);
    // In a test's transaction, TypeORM's own savepoint name for depth 1 is the one the end releases.
    const begin = this.depth === 1 ? this.entry.dialect.beginStatements(connection, this.spec) : ['SAVEPOINT typeorm_1'];
    const before = this.broadcast('BeforeTransactionStart');
    if (before !== undefined) await before;
    try {
      await this.send(connection, begin);
    } catch (error) {
      // Broken between the pool and here (a restart): the pool could not know, and nothing was sent.
      if (this.entry.dialect.isBroken(connection)) throw this.brokenError(error);
      throw error;
    }
    this.began = true;
    const after = this.broadcast('AfterTransactionStart');
    if (after !== undefined) await after;
    this.connection = connection;
    return connection;
  }

  /** Captures where the connection is taken, or takes the site its route's first request captured. */
  private noteHolder(): void {
    const sites = this.ctx.owner.sites;
    if (sites === undefined || this.slowMs !== undefined) {
      this.holder = captureStack();
      return;
    }
    const known = sites.get(this.entry.name);
    if (known !== undefined) {
      this.routeSite = known;
      return;
    }
    this.holder = captureStack();
    sites.set(this.entry.name, callSite(this.holder) ?? null);
  }

  /** What this transaction has of its pool now: nothing, a connection it is waiting for, or one it holds. */
  get hold(): 'none' | 'taking' | 'held' {
    if (this.acquiredAt !== undefined) return 'held';
    return this.waiting ? 'taking' : 'none';
  }

  /** Where the connection was taken, for messages. */
  holderSite(): string | undefined {
    if (this.holder !== undefined) return callSite(this.holder);
    return this.routeSite ? `${this.routeSite}, where this route's first request took it` : undefined;
  }

  /** Takes the connection from the pool, timed and counted; a failure becomes `ConnectionAcquisitionError`. */
  private async acquire(): Promise<unknown> {
    const counters = this.entry.counters;
    const started = performance.now();
    let acquisition: Promise<unknown>;
    // The driver's acquisition runs synchronously inside connect(): the guard sees the flag.
    this.acquiring = true;
    try {
      acquisition = original(this.runner as Patched, 'connect', []);
    } finally {
      this.acquiring = false;
    }
    this.waiting = true;
    let connection: unknown;
    try {
      connection = await acquisition;
    } catch (error) {
      counters.acquisitionFailures += 1;
      throw this.acquisitionError(error, performance.now() - started);
    } finally {
      this.waiting = false;
    }
    this.acquiredAt = performance.now();
    this.clock.acquired(this.acquiredAt, this.inFlight > 0); // idle in transaction
    counters.acquisitionWait.record(this.acquiredAt - started);
    counters.connectionsHeld += 1;
    if (this.slowMs !== undefined) {
      this.slowTimer = setTimeout(() => this.reportSlow(), this.slowMs);
      this.slowTimer.unref();
    }
    return connection;
  }

  private acquisitionError(cause: unknown, waitedMs: number): ConnectionAcquisitionError {
    const { name, dialect, dataSource } = this.entry;
    const pool = dialect.poolStats(dataSource);
    const reason = cause instanceof Error ? cause.message : String(cause);
    const held = this.entry.counters.connectionsHeld;
    // The pool's own message is the same for "every connection busy" and "new connections unanswered":
    // only a pool whose every connection is held by units of work is exhausted by them.
    const exhausted = pool.max > 0 && held >= pool.max;
    return new ConnectionAcquisitionError(
      `${this.ctx.label} got no connection of data source '${name}' after ${Math.round(waitedMs)} ms ` +
        `(pool: ${pool.total} of ${pool.max} open, ${pool.idle} idle, ${pool.waiting} waiting; ${held} held by units of work): ${reason}. ` +
        (exhausted
          ? `Every connection stayed in use by units of work for the whole acquisition timeout: find what holds them ` +
            `(TransactionHost.stats(), slowTransactionMs) or raise poolSize.`
          : `The database did not accept a new connection in time (unreachable, restarting, or out of connection ` +
            `slots), or connections are held outside units of work. Nothing was sent; the request can be retried ` +
            `once the database answers.`),
      { cause },
    );
  }

  /** The `slowTransactionMs` warning: once, while the connection is still held. */
  private reportSlow(): void {
    this.slowTimer = undefined;
    if (this.acquiredAt === undefined) return;
    const now = performance.now();
    const heldMs = now - this.acquiredAt;
    const running = this.inFlight > 0;
    const dbMs = this.clock.databaseMsAt(now);
    const idleMs = Math.max(0, heldMs - dbMs);
    this.ctx.registry.counters.slowTransactions += 1;
    const site = callSite(this.holder);
    logger.warn(
      `${this.ctx.label} has held a connection of data source '${this.entry.name}' for ${Math.round(heldMs)} ms, ` +
        `longer than slowTransactionMs (${this.slowMs} ms)${site ? `; it took it at ${site}` : ''}. ` +
        `${Math.round(dbMs)} ms went to ${this.clock.statements} statement(s) in the database${running ? ' (one is running now)' : ''}, ` +
        `${Math.round(idleMs)} ms to idling in transaction between them. ` +
        (idleMs >= dbMs
          ? `Idle in transaction means the connection waited on application code (an HTTP call, a slow computation): ` +
            `do that work before the first query, or after the response in an afterCommit hook.`
          : `Most of it went to the database: a slow statement, or one waiting for a lock another transaction holds.`) +
        this.clock.describeRoute(), // idle in transaction: the route's figures
    );
  }

  /** The connection went back to the pool (or was destroyed): counts the transaction's end. */
  private released(): void {
    if (this.slowTimer !== undefined) clearTimeout(this.slowTimer);
    if (this.began) {
      if (this.committed) this.entry.counters.commits += 1;
      else this.entry.counters.rollbacks += 1;
    }
    if (this.acquiredAt === undefined) return;
    const counters = this.entry.counters;
    const now = performance.now();
    counters.held.record(now - this.acquiredAt);
    this.clock.released(now, now - this.acquiredAt); // idle in transaction: the route's hold times
    counters.connectionsHeld -= 1;
    this.acquiredAt = undefined;
  }

  /** Transaction events for the data source's subscribers; nothing to do (and nothing awaited) without any. */
  broadcast(event: string): Promise<void> | undefined {
    if (this.entry.dataSource.subscribers.length === 0) return undefined;
    return this.runner?.broadcaster?.broadcast(event);
  }

  /**
   * Sends statements on the raw driver connection, logged through TypeORM's logger: BEGIN, COMMIT and
   * ROLLBACK bypass the query runner, so no state check, no event and no extra promise stands in the way.
   */
  private send(connection: unknown, statements: string[]): Promise<unknown> {
    if (statements.length === 1) return this.statement(connection, statements[0]);
    return this.sendEach(connection, statements);
  }

  private async sendEach(connection: unknown, statements: string[]): Promise<void> {
    for (const sql of statements) await this.statement(connection, sql);
  }

  /** One statement, logged; its failure as TypeORM's `QueryFailedError`. */
  private statement(connection: unknown, sql: string): Promise<unknown> {
    const { dialect, dataSource } = this.entry;
    dataSource.logger.logQuery(sql, undefined, this.runner);
    return dialect.send(connection, sql).then(undefined, (error: unknown) => {
      dataSource.logger.logQueryError(error as Error, sql, undefined, this.runner);
      throw new QueryFailedError(sql, undefined, error as Error);
    });
  }

  /** Commits or rolls back, then releases the connection; once. Rejects only when a commit failed. */
  end(commit: boolean): Promise<void> {
    return (this.ending ??= this.finish(commit));
  }

  private async finish(commit: boolean): Promise<void> {
    try {
      const qr = this.runner;
      if (qr === undefined) return;
      // Never queried: nothing was sent, no connection was taken.
      if (this.opening === undefined) {
        await original(qr, 'release', []);
        return;
      }
      // Set once BEGIN went through: nothing to wait for.
      let connection = this.connection;
      if (connection === undefined) {
        try {
          connection = await this.opening;
        } catch (error) {
          // The connection or its BEGIN failed; the query that triggered it already saw the error.
          await this.discard(error);
          if (commit) throw error;
          return;
        }
      }
      // No statement accepted while open may reach the driver after COMMIT/ROLLBACK (no new ones are accepted now).
      if (this.inFlight > 0) await this.settled();
      // Statements still waiting for their turn go on, to find the unit of work ended.
      this.turns.releaseAll();
      if (this.streams?.open === true) {
        // The connection is busy with a stream nobody may read to its end: close it, the database rolls back.
        const error = this.openStreamError(commit ? 'COMMIT' : 'ROLLBACK');
        await this.closeStreams(error);
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
      // The database aborted the transaction: it can only roll back, and the unit of work fails.
      const refused = commit && this.abort !== undefined ? this.abortedError('COMMIT') : undefined;
      if (refused !== undefined) commit = false;
      this.clock.ending(commit); // idle in transaction: the gap since the last statement
      try {
        await this.finishTransaction(connection, commit);
        this.committed = commit;
      } catch (error) {
        if (this.lost !== undefined) {
          // The server ended the session under the COMMIT or ROLLBACK (or while subscribers ran before it).
          await this.discard(this.lost);
          if (commit) throw this.lostError();
          return;
        }
        if (!commit) {
          await this.discard(error);
          if (refused !== undefined) throw refused;
          return;
        }
        // A failed COMMIT (a deferred constraint, say): make sure nothing stays open, then report it.
        try {
          await this.finishTransaction(connection, false);
        } catch (rollbackError) {
          await this.discard(rollbackError);
          throw error;
        }
        await this.close(connection);
        throw error;
      }
      await this.close(connection);
      if (refused !== undefined) throw refused;
    } finally {
      this.unwatch();
      this.released();
    }
  }

  /** COMMIT or ROLLBACK; savepoints left open end with it. In a test's transaction, its savepoint. */
  private async finishTransaction(connection: unknown, commit: boolean): Promise<void> {
    const qr = this.runner as Patched;
    const sql =
      this.depth === 1
        ? commit ? 'COMMIT' : 'ROLLBACK'
        : commit ? 'RELEASE SAVEPOINT typeorm_1' : 'ROLLBACK TO SAVEPOINT typeorm_1';
    const before = this.broadcast(commit ? 'BeforeTransactionCommit' : 'BeforeTransactionRollback');
    if (before !== undefined) await before;
    // Lost while the subscribers ran: the transaction is gone, there is nothing to send it to.
    if (this.lost !== undefined) throw this.lost;
    this.endSent = commit ? 'COMMIT' : 'ROLLBACK';
    const answer = await this.send(connection, [sql]);
    if (commit && this.depth === 1 && this.entry.dialect.commitRefused(answer)) throw this.refusedCommitError();
    qr.isTransactionActive = false;
    qr.transactionDepth = this.depth - 1;
    const after = this.broadcast(commit ? 'AfterTransactionCommit' : 'AfterTransactionRollback');
    if (after !== undefined) await after;
  }

  /** PostgreSQL answered COMMIT with ROLLBACK: the transaction was aborted by a statement the library did not run. */
  private refusedCommitError(): TransactionAbortedError {
    return new TransactionAbortedError(
      `PostgreSQL answered the COMMIT of ${this.ctx.label} with ROLLBACK: a statement of its transaction had failed, ` +
        `sent on its connection outside the unit of work's manager, and the database aborted the transaction. ` +
        `Nothing of it was written. Run every statement through the manager from @Tx() (or TransactionHost.manager()), ` +
        `and let a failure propagate or run the statement that may fail in tx.transaction().`,
    );
  }

  /** Undoes session state the BEGIN set (MySQL timeouts), then returns the connection to the pool. */
  private close(connection: unknown): Promise<unknown> {
    const reset = this.entry.dialect.endStatements(connection, this.spec);
    if (reset.length === 0) return original(this.runner as Patched, 'release', []);
    return this.resetAndRelease(connection, reset);
  }

  private async resetAndRelease(connection: unknown, reset: string[]): Promise<void> {
    try {
      await this.send(connection, reset);
    } catch (error) {
      return this.discard(error);
    }
    await original(this.runner as Patched, 'release', []);
  }

  /** Gives the connection up without returning it to the pool: its state is unknown. */
  private async discard(cause: unknown): Promise<void> {
    const qr = this.runner as Patched;
    if (qr.databaseConnection === undefined) {
      await original(qr, 'release', []);
      return;
    }
    await this.entry.dialect.destroy(qr, cause);
  }
}
