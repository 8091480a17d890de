import { Logger } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { TransactionAbortedError, type TransactionFinishedError } from '../errors';
import type { GuardMode, TransactionOptions } from '../transactional.options';
import type { DataSourceEntry, DataSourceRegistry } from './data-source-registry';
import { DataSourceTransaction } from './data-source-transaction';
import { type Hook, type HookScope, mergeHooks, newHookScope, runHooks } from './hook-scopes';
import { SavepointScope } from './savepoint-scope';
import { explainError, finishedError, partialCommitError } from './unit-of-work-errors';
import type { UnitOfWorkOwner } from './unit-of-work-owner';
import { unitOfWorkStorage } from './unit-of-work-storage';

/** Where a unit of work is in its lifecycle: open, settling, then settled one way or the other. */
export type UnitOfWorkState = 'open' | 'settling' | 'committed' | 'rolledBack';
export type Outcome = 'committed' | 'rolledBack';
/** A savepoint of one of this module's units of work. */
export type Savepoint = SavepointScope<UnitOfWork, DataSourceTransaction>;

const logger = new Logger('TransactionalModule');
const COMMITTED: Promise<Outcome> = Promise.resolve('committed');
const ROLLED_BACK: Promise<Outcome> = Promise.resolve('rolledBack');
const NONE: readonly never[] = [];

/**
 * One unit of work: a request, or one `TransactionRunner.run()`. The lifecycle, top to bottom:
 * opened by its owner; used through one `DataSourceTransaction` per data source, created on first use
 * (a QueryRunner whose connection and BEGIN come with the first query); settled exactly once (COMMIT
 * or ROLLBACK on every data source, every connection released); then its hooks run.
 */
export class UnitOfWork {
  state: UnitOfWorkState = 'open';
  /** Created with the first data source: most requests that never query allocate none. */
  private transactions?: Map<string, DataSourceTransaction>;
  /** The data sources in the order of their first statement: the order they commit in. */
  private used?: DataSourceTransaction[];
  /** Created on the first hook: most units of work register none. Savepoints hold their own. */
  private hooks?: HookScope;
  private settlement?: Promise<Outcome>;
  private reason?: string;

  // ── open ──────────────────────────────────────────────────────────────────────────────────────

  constructor(
    readonly registry: DataSourceRegistry,
    readonly options: TransactionOptions,
    readonly owner: UnitOfWorkOwner,
  ) {
    registry.counters.openUnitsOfWork += 1;
  }

  /** `POST /transfers`, or the runner's name. Computed only when a message needs it. */
  get label(): string {
    return this.owner.describe();
  }

  /** Runs the owner's work with this unit of work as the current one. */
  enter(): unknown {
    return unitOfWorkStorage.run(this, attemptOf, this);
  }

  // ── use ───────────────────────────────────────────────────────────────────────────────────────

  /** The manager of this unit of work on data source `name`; `use` names the caller in messages. */
  manager(name: string, use: string): EntityManager {
    if (this.state !== 'open') throw this.finishedError(use);
    return this.transactionOn(name, use).manager;
  }

  private transactionOn(name: string, use: string): DataSourceTransaction {
    let transaction = this.transactions?.get(name);
    if (transaction === undefined) {
      const entry = this.registry.get(name, use);
      this.engage(use);
      transaction = new DataSourceTransaction(this, entry);
      (this.transactions ??= new Map()).set(name, transaction);
    }
    return transaction;
  }

  /** Tells the owner before the first data source or hook; fails if that settled the unit of work. */
  private engage(use: string): void {
    if (!this.untouched) return;
    this.owner.engaged?.(this);
    if (this.state !== 'open') throw this.finishedError(use);
  }

  /** The data-source transactions this unit of work has opened. */
  opened(): Iterable<DataSourceTransaction> {
    return this.transactions?.values() ?? NONE;
  }

  /** A data source's first statement: data sources commit in this order. */
  noteFirstStatement(transaction: DataSourceTransaction): void {
    (this.used ??= []).push(transaction);
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
    if (savepoint !== undefined) return (savepoint.hooks ??= newHookScope());
    if (this.hooks === undefined) {
      this.engage(`TransactionHost.${use}()`);
      this.hooks = newHookScope();
    }
    return this.hooks;
  }

  /** The innermost open savepoint of this unit of work whose callback the caller runs in. */
  private savepointOfCaller(): Savepoint | undefined {
    const store = unitOfWorkStorage.getStore();
    return store instanceof SavepointScope && store.unitOfWork === this ? (store as Savepoint).innermostOpen() : undefined;
  }

  /** A savepoint ended: its hooks join the scope around it when it was kept, and are dropped when not. */
  savepointEnded(savepoint: Savepoint, kept: boolean): void {
    if (!kept || savepoint.hooks === undefined) return;
    const outer = savepoint.enclosing?.innermostOpen();
    mergeHooks(outer !== undefined ? (outer.hooks ??= newHookScope()) : (this.hooks ??= newHookScope()), savepoint.hooks);
  }

  // ── settle ────────────────────────────────────────────────────────────────────────────────────

  /**
   * Settles the unit of work once: commit (if asked and possible) or rollback on every data source,
   * every connection released, then the hooks. Later calls return the first call's outcome. Rejects
   * only when COMMIT failed.
   */
  settle(commit: boolean, reason?: string): Promise<Outcome> {
    if (this.settlement === undefined) {
      this.reason = reason;
      this.settlement = this.untouched ? this.settleUntouched(commit) : this.settleTransactions(commit);
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

  /** Why the unit of work was settled before its work ended (a client disconnect), once it was. */
  get cancelled(): string | undefined {
    return this.state === 'open' ? undefined : this.reason;
  }

  /** Nothing asked for a connection and no hook was registered: there is nothing to send, release or run. */
  private get untouched(): boolean {
    return this.transactions === undefined && this.hooks === undefined;
  }

  private settleUntouched(commit: boolean): Promise<Outcome> {
    this.state = commit ? 'committed' : 'rolledBack';
    this.registry.counters.openUnitsOfWork -= 1;
    return commit ? COMMITTED : ROLLED_BACK;
  }

  private async settleTransactions(commit: boolean): Promise<Outcome> {
    this.state = 'settling';
    let failure: unknown;
    let outcome: Outcome = 'rolledBack';
    if (commit) {
      const committed: string[] = [];
      let ending: DataSourceTransaction | undefined;
      try {
        for (ending of this.commitOrder()) {
          await ending.end(true);
          if (ending.committed) committed.push(ending.entry.name);
        }
        outcome = 'committed';
      } catch (error) {
        failure = committed.length > 0 ? this.partialCommit(committed, ending as DataSourceTransaction, error) : error;
      }
    }
    if (outcome === 'rolledBack') {
      // A data source that already ended keeps its first outcome; the rest roll back.
      for (const transaction of this.opened()) await transaction.end(false).catch(() => undefined);
    }
    this.state = outcome;
    this.registry.counters.openUnitsOfWork -= 1;
    // ── hooks ──
    const hooks = outcome === 'committed' ? this.hooks?.commit : this.hooks?.rollback;
    // Hooks run outside this unit of work: one that calls TransactionRunner.run() starts a fresh one.
    if (hooks !== undefined && hooks.length > 0) await unitOfWorkStorage.exit(() => runHooks(hooks, outcome, this.label));
    if (failure !== undefined) throw this.explain(failure);
    return outcome;
  }

  /** Every data source this unit of work holds, those that ran statements first, in the order they did. */
  private commitOrder(): Iterable<DataSourceTransaction> {
    const transactions = this.transactions;
    if (transactions === undefined) return NONE;
    const used = this.used;
    if (used === undefined || transactions.size === 1 || used.length === transactions.size) return used ?? transactions.values();
    return [...used, ...[...transactions.values()].filter((transaction) => !used.includes(transaction))];
  }

  private partialCommit(committed: string[], failed: DataSourceTransaction, cause: unknown): Error {
    const error = partialCommitError(this.label, committed, failed.entry.name, cause);
    logger.error(error.message);
    return error;
  }

  // ── after settling: retry and errors ──────────────────────────────────────────────────────────

  /**
   * A deadlock or serialization failure on one of this unit of work's data sources, or a transaction
   * the database aborted for one (`TransactionAbortedError`): the whole unit of work may succeed if run again.
   */
  isRetryable(error: unknown): boolean {
    const cause = error instanceof TransactionAbortedError ? error.cause : error;
    for (const transaction of this.opened()) {
      if (transaction.entry.dialect.isRetryable(cause)) return true;
    }
    return false;
  }

  /** A database timeout as `TransactionTimeoutError`, a lost connection as its error; see `explainError()`. */
  explain(error: unknown): unknown {
    // An array: the explanation walks the data sources more than once.
    return explainError(this.label, [...this.opened()], error);
  }

  /** The error for use of this unit of work after it settled (or while it settles). */
  finishedError(use: string): TransactionFinishedError {
    return finishedError(this.label, this.state, this.reason, use);
  }
}

function attemptOf(unitOfWork: UnitOfWork): unknown {
  return unitOfWork.owner.attempt(unitOfWork);
}
