import { setTimeout as delay } from 'node:timers/promises';
import { Injectable, Logger } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { describeValue, NoTransactionError, TransactionAbortedError, TransactionalOptionsError } from '../errors';
import { checkedTransactionOptions, resolveRetry } from '../options-check';
import type { RetryOptions, TransactionOptions } from '../transactional.options';
import { DEFAULT_DATA_SOURCE, DataSourceRegistry } from './data-source-registry';
import type { TransactionalStats } from './stats';
import { currentUnitOfWork, requireManager } from './current-unit-of-work';
import { UnitOfWork, type UnitOfWorkState } from './unit-of-work';
import type { UnitOfWorkOwner } from './unit-of-work-owner';

/**
 * How `TransactionRunner.run()` relates to a unit of work already open around it:
 * `'required'` joins it (same connection, same transaction), `'nested'` runs in a SAVEPOINT of it.
 * Without one, both start a new unit of work.
 */
export type Propagation = 'required' | 'nested';

/** Options of `TransactionRunner.run()`. */
export interface RunOptions extends TransactionOptions {
  /** Names the unit of work in errors and warnings. Default: `'TransactionRunner.run()'`. */
  name?: string;
  /** Data source whose manager `fn` receives. Default: `'default'`. */
  dataSource?: string;
  /** Default: `'required'`. */
  propagation?: Propagation;
}

const RUN_OPTION_KEYS = ['name', 'dataSource', 'propagation'];
const logger = new Logger('TransactionalModule');

/**
 * Runs a unit of work outside HTTP (cron jobs, queue consumers, scripts) with the same semantics as a
 * request: lazy BEGIN, one connection per data source, commit or rollback exactly once, hooks, guard.
 */
@Injectable()
export class TransactionRunner {
  constructor(private readonly registry: DataSourceRegistry) {}

  /**
   * Runs `fn` in a transaction and resolves with its result once COMMIT succeeded; rolls back and
   * rejects with `fn`'s error if it throws. Inside an open unit of work it joins it, or with
   * `propagation: 'nested'` runs in a SAVEPOINT on the same connection.
   * @example
   * await runner.run((tx) => tx.getRepository(Invoice).save(invoice), { name: 'nightly-invoices' });
   */
  async run<T>(fn: (tx: EntityManager) => Promise<T> | T, options: RunOptions = {}): Promise<T> {
    if (typeof fn !== 'function') {
      throw new TransactionalOptionsError(
        `TransactionRunner.run() takes the work as a function (tx) => …, got ${describeValue(fn)}.`,
      );
    }
    // A frozen copy, read once: the options object may change under a unit of work that waits to retry.
    const checked = checkedTransactionOptions<RunOptions>(options, 'TransactionRunner.run()', RUN_OPTION_KEYS);
    const { name, dataSource = DEFAULT_DATA_SOURCE, propagation = 'required', ...transaction } = checked;
    const open = currentUnitOfWork();
    if (open !== undefined && open.state === 'open') {
      const tx = open.manager(dataSource, 'TransactionRunner.run()');
      return propagation === 'nested' ? tx.transaction(async (savepoint) => fn(savepoint)) : fn(tx);
    }
    // The handler of a request its client abandoned goes on running: none of its work may commit.
    if (open?.cancelled !== undefined) throw open.finishedError('TransactionRunner.run()');
    const label = name ?? 'TransactionRunner.run()';
    return this.execute(transaction, {
      describe: () => label,
      attempt: (unitOfWork) => fn(unitOfWork.manager(dataSource, label)),
    }) as Promise<T>;
  }

  /**
   * @internal The HTTP routes' and `run()`'s shared lifecycle.
   * Runs the owner's work as a new unit of work, settles it, and runs it again in a fresh one after a
   * deadlock or serialization failure when `options.retry` allows: bounded attempts, exponential backoff
   * with full jitter, each retry logged, the last error surfaced. Hooks of failed attempts never run.
   * Returns the work's value itself, not a promise, when the work returned one synchronously and never
   * asked for a connection or a hook: there was nothing to commit.
   */
  execute(options: TransactionOptions, owner: UnitOfWorkOwner): unknown {
    const retry = options.retry === undefined || options.retry === false ? undefined : resolveRetry(options.retry);
    if (retry === undefined || retry.attempts === 1) return this.complete(new UnitOfWork(this.registry, options, owner));
    return this.retrying(retry, options, owner);
  }

  private async retrying(retry: Required<RetryOptions>, options: TransactionOptions, owner: UnitOfWorkOwner): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      const unitOfWork = new UnitOfWork(this.registry, options, owner);
      try {
        return await this.complete(unitOfWork);
      } catch (error) {
        if (attempt >= retry.attempts || !unitOfWork.isRetryable(error) || owner.canRetry?.() === false) throw error;
        const ceiling = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
        const wait = Math.floor(Math.random() * ceiling);
        this.registry.counters.retries += 1;
        logger.warn(
          `${unitOfWork.label}: attempt ${attempt} of ${retry.attempts} failed (${describeError(error)}); running it again in ${wait} ms.`,
        );
        await delay(wait);
        // The client may have gone while we waited.
        if (owner.canRetry?.() === false) throw error;
      }
    }
  }

  /**
   * Runs the work inside `unitOfWork` and settles it: the result is returned only after COMMIT succeeded;
   * an error rolls back first and is then rethrown (a database timeout as `TransactionTimeoutError`).
   */
  private complete(unitOfWork: UnitOfWork): unknown {
    let result: unknown;
    try {
      result = unitOfWork.enter();
    } catch (error) {
      return this.fail(unitOfWork, error);
    }
    // A value returned synchronously with nothing to commit comes back as it is.
    if (!isThenable(result) && unitOfWork.commitUntouched()) return result;
    return this.completeLater(unitOfWork, result);
  }

  /**
   * `complete()` once the work returned a promise, or a value with something to commit. Awaited in one
   * async function rather than chained: two `.then()` steps, and the promise the first is resolved
   * with, cost a request three promises; this costs it one.
   */
  private async completeLater(unitOfWork: UnitOfWork, pending: unknown): Promise<unknown> {
    let value: unknown;
    try {
      value = await pending;
    } catch (error) {
      return this.fail(unitOfWork, error);
    }
    if (unitOfWork.commitUntouched()) return value;
    const outcome = await unitOfWork.settle(true);
    // Settled earlier by someone else: an aborted request.
    if (outcome !== 'committed') throw unitOfWork.finishedError('the handler returned and its result');
    return value;
  }

  private async fail(unitOfWork: UnitOfWork, error: unknown): Promise<never> {
    await unitOfWork.settle(false);
    throw unitOfWork.explain(error);
  }
}

/** @internal */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

function describeError(error: unknown): string {
  // An aborted transaction's error explains what to do; the retry log needs only what failed first.
  const first = error instanceof TransactionAbortedError ? error.cause : error;
  const driver = (first as { driverError?: { code?: unknown; errno?: unknown } }).driverError;
  const code = driver?.code ?? (first as { code?: unknown }).code;
  const caught = first === error ? '' : ', caught by the work, which went on';
  return `${first instanceof Error ? first.message : String(first)}${typeof code === 'string' || typeof code === 'number' ? ` [${code}]` : ''}${caught}`;
}

/** What `TransactionHost.current()` tells about the unit of work of the caller. */
export interface UnitOfWorkInfo {
  /** `POST /transfers`, or the runner's name. */
  readonly name: string;
  readonly state: UnitOfWorkState;
}

/**
 * The current unit of work, for services: its manager, its state, and hooks that run after it ends.
 */
@Injectable()
export class TransactionHost {
  constructor(private readonly registry: DataSourceRegistry) {}

  /**
   * A snapshot of what the units of work and the pools are doing: open units of work, connections
   * held, each pool's counters, acquisition wait and connection hold time (p50 / p99 / max of the
   * latest 1024), commits, rollbacks, retries, guard violations, slow transactions.
   */
  stats(): TransactionalStats {
    return this.registry.stats();
  }

  /** The unit of work the caller runs in, or undefined outside one. */
  current(): UnitOfWorkInfo | undefined {
    const unitOfWork = currentUnitOfWork();
    return unitOfWork && { name: unitOfWork.label, state: unitOfWork.state };
  }

  /** The current unit of work's `EntityManager`; `NoTransactionError` outside one. */
  manager(dataSource?: string): EntityManager {
    return requireManager(dataSource, 'TransactionHost.manager()');
  }

  /**
   * Runs `hook` after the unit of work committed and released its connections, before the response
   * leaves. Hooks run in registration order; one that fails is logged and the request stays committed.
   * Hooks registered inside a savepoint that rolls back are dropped.
   */
  afterCommit(hook: () => unknown): void {
    this.require('afterCommit').afterCommit(hook);
  }

  /** Runs `hook` after the unit of work rolled back and released its connections. */
  afterRollback(hook: () => unknown): void {
    this.require('afterRollback').afterRollback(hook);
  }

  private require(method: string): UnitOfWork {
    const unitOfWork = currentUnitOfWork();
    if (unitOfWork === undefined) {
      throw new NoTransactionError(
        `TransactionHost.${method}() was called outside a unit of work. Call it from a request handled by ` +
          `TransactionalModule or inside TransactionRunner.run().`,
      );
    }
    return unitOfWork;
  }
}
