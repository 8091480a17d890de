import { Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { currentUnitOfWork } from '../core/current-unit-of-work';
import { type Propagation, TransactionRunner } from '../core/transaction-runner';
import { NoTransactionError, TransactionalOptionsError } from '../errors';
import type { TransactionOptions } from '../transactional.options';

/** What `@Transactional()` takes on a method: a unit of work's options, and how to relate to an open one. */
export interface TransactionalMethodOptions extends TransactionOptions {
  /** `'required'` joins an open unit of work, `'nested'` runs in a SAVEPOINT of it. Default: `'required'`. */
  propagation?: Propagation;
  /** The data source whose savepoint `'nested'` opens. Default: `'default'`. */
  dataSource?: string;
}

type Method = (...args: unknown[]) => unknown;

/** On a method `@Transactional()` wrapped: it runs in a unit of work. */
const TRANSACTIONAL_METHOD = Symbol('nestjs-request-transaction:transactional-method');

/** The runners of the applications running now, and which one owns which provider instance. */
const runners = new Set<TransactionRunner>();
const owners = new WeakMap<object, TransactionRunner>();

/**
 * `method`, run in a unit of work: with one open (a request's, or a caller's `run()`), it joins it,
 * or with `propagation: 'nested'` runs in a savepoint of it; with none open, or only one that already
 * ended (work that outlives its request, an event handler), it runs in a new unit of work with
 * `options`, as `TransactionRunner.run()` does. Keeps the method's metadata and name.
 */
export function transactionalMethod(method: Method, options: TransactionalMethodOptions, label: string): Method {
  const { propagation = 'required', dataSource = DEFAULT_DATA_SOURCE, ...unitOptions } = options;
  const wrapped = function (this: object, ...args: unknown[]): unknown {
    const open = currentUnitOfWork();
    if (open !== undefined && open.state === 'open') {
      if (propagation === 'required') return method.apply(this, args);
      return open.manager(dataSource, label).transaction(async () => method.apply(this, args));
    }
    // The handler of a request its client abandoned goes on running: none of its work may commit.
    if (open?.cancelled !== undefined) throw open.finishedError(label);
    return runnerOf(this, label).execute(unitOptions, { describe: () => label, attempt: () => method.apply(this, args) });
  };
  for (const key of Reflect.getMetadataKeys(method)) Reflect.defineMetadata(key, Reflect.getMetadata(key, method), wrapped);
  Object.defineProperty(wrapped, 'name', { value: method.name });
  Object.defineProperty(wrapped, TRANSACTIONAL_METHOD, { value: true });
  return wrapped;
}

/** Wraps the method a method decorator was given; fails at once where there is no method to wrap. */
export function wrapDescriptor(
  target: object,
  key: string | symbol,
  descriptor: PropertyDescriptor,
  options: TransactionalMethodOptions,
): void {
  const owner = typeof target === 'function' ? target.name : target.constructor.name;
  const label = `${owner}.${String(key)}()`;
  if (typeof descriptor.value !== 'function') {
    throw new TransactionalOptionsError(
      `@Transactional() on ${label}: it wraps a method, and ${String(key)} is ${descriptor.get || descriptor.set ? 'an accessor' : 'not a function'}. ` +
        `Put it on a method (or on the class, for all of its methods).`,
    );
  }
  descriptor.value = transactionalMethod(descriptor.value as Method, options, label);
}

/** Wraps every method of a class's prototype (a class-level `@Transactional()`). */
export function wrapClass(target: Function, options: TransactionalMethodOptions): void {
  const prototype = target.prototype as object;
  for (const key of Reflect.ownKeys(prototype)) {
    if (key === 'constructor') continue;
    const descriptor = Object.getOwnPropertyDescriptor(prototype, key);
    if (descriptor === undefined || typeof descriptor.value !== 'function' || TRANSACTIONAL_METHOD in descriptor.value) continue;
    wrapDescriptor(prototype, key, descriptor, options);
    Object.defineProperty(prototype, key, descriptor);
  }
}

function runnerOf(instance: object, label: string): TransactionRunner {
  const owner = typeof instance === 'object' && instance !== null ? owners.get(instance) : undefined;
  if (owner !== undefined) return owner;
  if (runners.size === 1) return runners.values().next().value as TransactionRunner;
  throw new NoTransactionError(
    runners.size === 0
      ? `${label} is @Transactional(), but no application with TransactionalModule is running: import ` +
          `TransactionalModule.forRoot() in the application whose provider this is.`
      : `${label} is @Transactional() and was called outside a unit of work, on an instance Nest did not create at ` +
          `bootstrap (a request-scoped provider, or one built with new), while ${runners.size} applications with ` +
          `TransactionalModule run in this process: which one's transaction it belongs in is unknown. Call it from ` +
          `inside TransactionRunner.run() of the right application.`,
  );
}

/**
 * Binds the application's `@Transactional()` methods to its runner: every provider and controller
 * instance of the application is recorded as the runner's, through Nest's public discovery service.
 */
@Injectable()
export class TransactionalMethodBinding implements OnModuleInit, OnModuleDestroy {
  constructor(
    private readonly discovery: DiscoveryService,
    private readonly runner: TransactionRunner,
  ) {}

  onModuleInit(): void {
    runners.add(this.runner);
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      const instance = wrapper.instance as unknown;
      if (typeof instance === 'object' && instance !== null && hasTransactionalMethod(instance))
        owners.set(instance, this.runner);
    }
  }

  onModuleDestroy(): void {
    runners.delete(this.runner);
  }
}

function hasTransactionalMethod(instance: object): boolean {
  for (
    let proto = Object.getPrototypeOf(instance) as object | null;
    proto !== null && proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto) as object | null
  ) {
    for (const key of Reflect.ownKeys(proto)) {
      const value = Object.getOwnPropertyDescriptor(proto, key)?.value as { [TRANSACTIONAL_METHOD]?: true } | undefined;
      if (typeof value === 'function' && value[TRANSACTIONAL_METHOD] === true) return true;
    }
  }
  return false;
}
