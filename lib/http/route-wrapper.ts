import { HttpException } from '@nestjs/common';
import { INTERCEPTORS_METADATA, PATH_METADATA, ROUTE_ARGS_METADATA, SSE_METADATA } from '@nestjs/common/constants';
import type { ModulesContainer } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EMPTY, isObservable, Observable, of, type Subscription } from 'rxjs';
import { DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { currentExchange, runWithExchange, type TransactionContext, type UnitOfWorkOwner } from '../core/transaction-context';
import { isThenable, type TransactionRunner } from '../core/transaction-runner';
import { NO_TRANSACTION, TRANSACTIONAL_OPTIONS } from '../decorators/transactional.decorator';
import type { TransactionOptions } from '../transactional.options';
import { txParam, txUse, WRAPPED_HANDLER } from './tx-param';

/** Express and Fastify requests: the route pattern, for messages. */
type HttpRequest = IncomingMessage & { route?: { path?: string }; routeOptions?: { url?: string }; originalUrl?: string };
/** Express's response (`req` set by Express) or Fastify's reply. */
type HttpReply = (ServerResponse & { req?: HttpRequest }) | { raw: ServerResponse; request: HttpRequest };
type Handler = (...args: unknown[]) => unknown;

/** What a wrapped route knows, computed once at bootstrap. */
interface Route {
  readonly original: Handler;
  readonly runner: TransactionRunner;
  readonly options: TransactionOptions;
  /** `Controller.method()`: names the unit of work when the handler is called without HTTP. */
  readonly name: string;
  /** `@Tx()` arguments, replaced by the unit of work's managers on every attempt. */
  readonly txArgs: ReadonlyArray<{ index: number; dataSource: string | undefined; use: string }>;
  /** Where the route's first request took its connections (see `UnitOfWorkOwner.sites`). */
  readonly sites: Map<string, string | null>;
}

/** The HTTP adapter's route registration methods (Nest's `RequestMethod`s, lower-cased). */
const ROUTE_METHODS = [
  'get', 'post', 'put', 'delete', 'patch', 'all', 'options', 'head', 'search',
  'propfind', 'proppatch', 'mkcol', 'copy', 'move', 'lock', 'unlock',
] as const;
const watchedAdapters = new WeakSet<object>();

/**
 * Has every route handler registered on the application's HTTP adapter from now on run with its
 * response (Express) or reply (Fastify) in the library's async context, where a wrapped route finds it
 * (to see a client disconnect) whatever guards and pipes Nest ran in between. Nest registers its
 * routes through these methods of the adapter (`adapter.get(path, handler)`, ...); the handler keeps
 * its metadata and own properties (Fastify's route options, versions).
 */
export function watchRouteRegistrations(adapter: object | undefined): void {
  if (adapter === undefined || adapter === null || watchedAdapters.has(adapter)) return;
  watchedAdapters.add(adapter);
  const methods = adapter as Record<string, unknown>;
  for (const name of ROUTE_METHODS) {
    const register = methods[name];
    if (typeof register !== 'function') continue;
    methods[name] = function (this: unknown, ...args: unknown[]): unknown {
      const last = args.length - 1;
      if (last > 0 && typeof args[last] === 'function') args[last] = withExchange(args[last] as Handler);
      return register.apply(this, args);
    };
  }
}

/** The route handler, run with its response as the current exchange. */
function withExchange(handler: Handler): Handler {
  const routed = function (this: unknown, ...args: unknown[]): unknown {
    const response = args[1];
    if (typeof response !== 'object' || response === null) return handler.apply(this, args);
    return runWithExchange(response, handler, this, args);
  };
  for (const key of Reflect.getMetadataKeys(handler)) {
    Reflect.defineMetadata(key, Reflect.getMetadata(key, handler), routed);
  }
  Object.assign(routed, handler);
  return routed;
}

interface ControllerWrapper {
  instance: object | undefined;
  metatype: unknown;
  isDependencyTreeStatic(): boolean;
}

interface InterceptorSources {
  getGlobalInterceptors(): unknown[];
  getGlobalRequestInterceptors(): unknown[];
}

const wrappedControllers = new WeakSet<object>();

/**
 * Runs every HTTP route handler of the application's controllers in its own unit of work: each
 * handler becomes, on its controller instance, a wrapper that Nest registers in its place. Called
 * once the controllers exist and before Nest registers the routes. Routes marked
 * `@NoTransaction()` and `@Sse()` routes are left as they are; non-HTTP handlers are never wrapped.
 */
export function wrapRoutes(modules: ModulesContainer, runner: TransactionRunner): void {
  let interceptorSources: InterceptorSources | undefined;
  for (const moduleRef of modules.values()) {
    interceptorSources ??= (moduleRef as unknown as { container?: { applicationConfig?: InterceptorSources } }).container
      ?.applicationConfig;
    for (const wrapper of moduleRef.controllers.values() as IterableIterator<ControllerWrapper>) {
      if (wrappedControllers.has(wrapper)) continue;
      wrappedControllers.add(wrapper);
      const instance = wrapper.instance;
      if (instance === undefined || instance === null || typeof wrapper.metatype !== 'function') continue;
      const routes = wrapControllerRoutes(instance, runner, (handler) =>
        // A route with interceptors gets an Observable: one that cuts it (a timeout) must roll back.
        // For request-scoped controllers Nest reads the interceptors on every request.
        mayBeIntercepted(handler, instance.constructor, wrapper.isDependencyTreeStatic() ? interceptorSources : undefined),
      );
      if (routes.size === 0) continue;
      if (wrapper.isDependencyTreeStatic()) {
        for (const [name, route] of routes) defineHandler(instance, name, route);
      } else {
        wrapper.metatype = withRoutes(wrapper.metatype as new (...args: unknown[]) => object, routes);
      }
    }
  }
}

/** The wrappers of a controller's routes, by method name. */
function wrapControllerRoutes(
  instance: object,
  runner: TransactionRunner,
  intercepted: (handler: Handler) => boolean,
): Map<string, Handler> {
  const routes = new Map<string, Handler>();
  const controller = instance.constructor;
  const prototype = Object.getPrototypeOf(instance) as Record<string, unknown>;
  for (const name of methodNames(prototype)) {
    const original = prototype[name] as Handler;
    if (Reflect.getMetadata(PATH_METADATA, original) === undefined) continue;
    // Server-sent events stream for as long as the client listens: holding a transaction (and a
    // pooled connection) that long is what this library exists to prevent.
    const skip =
      (Reflect.getMetadata(NO_TRANSACTION, original) ?? Reflect.getMetadata(NO_TRANSACTION, controller)) === true ||
      Reflect.getMetadata(SSE_METADATA, original) === true;
    if (skip) continue;
    const route: Route = {
      original,
      runner,
      options: {
        ...(Reflect.getMetadata(TRANSACTIONAL_OPTIONS, controller) as TransactionOptions | undefined),
        ...(Reflect.getMetadata(TRANSACTIONAL_OPTIONS, original) as TransactionOptions | undefined),
      },
      name: `${controller.name}.${name}()`,
      txArgs: txArguments(controller, name),
      sites: new Map(),
    };
    routes.set(name, createHandler(route, intercepted(original)));
  }
  return routes;
}

/** Method names along the prototype chain, as Nest scans them for routes. */
function methodNames(prototype: object): Set<string> {
  const names = new Set<string>();
  for (let proto = prototype; proto !== null && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === 'constructor') continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, name);
      if (descriptor !== undefined && typeof descriptor.value === 'function') names.add(name);
    }
  }
  return names;
}

/** The route's `@Tx()` arguments. */
function txArguments(controller: Function, name: string): Route['txArgs'] {
  const metadata = (Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, name) ?? {}) as Record<
    string,
    { index: number; factory?: unknown; data?: unknown }
  >;
  const txArgs: Route['txArgs'][number][] = [];
  for (const param of Object.values(metadata)) {
    if (param.factory === txParam) {
      const dataSource = param.data as string | undefined;
      txArgs.push({ index: param.index, dataSource, use: txUse(dataSource) });
    }
  }
  return txArgs;
}

/** Whether Nest may run interceptors around the handler (unknown global ones count as some). */
function mayBeIntercepted(handler: Handler, controller: Function, config: InterceptorSources | undefined): boolean {
  if (config === undefined) return true;
  const scoped = (target: object) => ((Reflect.getMetadata(INTERCEPTORS_METADATA, target) ?? []) as unknown[]).length > 0;
  return (
    config.getGlobalInterceptors().length > 0 ||
    config.getGlobalRequestInterceptors().length > 0 ||
    scoped(controller) ||
    scoped(handler)
  );
}

/** Sets the route handler on a controller instance: Nest registers `instance[name]`. */
function defineHandler(instance: object, name: string, handler: Handler): void {
  Object.defineProperty(instance, name, { value: handler, writable: true, configurable: true, enumerable: false });
}

/**
 * A request-scoped controller gets a new instance for every request: the application's provider
 * builds them with the route wrappers set. The class itself is left unchanged for other applications.
 */
function withRoutes(metatype: new (...args: unknown[]) => object, routes: Map<string, Handler>): Function {
  const build = function (...args: unknown[]) {
    const instance = new metatype(...args);
    for (const [name, handler] of routes) defineHandler(instance, name, handler);
    return instance;
  };
  Object.setPrototypeOf(build, metatype);
  Object.defineProperty(build, 'name', { value: metatype.name });
  build.prototype = metatype.prototype;
  return build;
}

/** The function Nest calls for the route: same metadata, same name, same `this`, same arguments. */
function createHandler(route: Route, intercepted: boolean): Handler {
  const handler = function (this: unknown, ...args: unknown[]): unknown {
    const reply = currentExchange() as HttpReply | undefined;
    if (!intercepted) return new RouteCall(route, this, args, reply).run(true);
    return new Observable((subscriber) => {
      const call = new RouteCall(route, this, args, reply);
      Promise.resolve(call.run(false)).then(
        (value) => {
          if (call.returnedObservable ? call.emitted : true) subscriber.next(value);
          subscriber.complete();
        },
        (error: unknown) => subscriber.error(error),
      );
      // Unsubscribed before the work ended: roll back.
      return () => call.cut();
    });
  };
  for (const key of Reflect.getMetadataKeys(route.original)) {
    Reflect.defineMetadata(key, Reflect.getMetadata(key, route.original), handler);
  }
  Object.defineProperty(handler, 'name', { value: route.original.name });
  Object.defineProperty(handler, WRAPPED_HANDLER, { value: true });
  return handler;
}

/**
 * One request of a wrapped route: the handler runs inside the unit of work (again, in a fresh one,
 * on a retry), its value is returned only after COMMIT succeeded, an error is rethrown after
 * ROLLBACK, and a client that disconnects first gets its transaction rolled back. The request is
 * watched for a disconnect from the moment its unit of work holds something to roll back: a
 * request that never queries costs a listener nothing.
 */
class RouteCall implements UnitOfWorkOwner {
  private ctx?: TransactionContext;
  private aborted?: string;
  private onClose?: () => void;
  private subscription?: Subscription;
  returnedObservable = false;
  emitted = false;
  private last: unknown;
  private asObservable = true;

  constructor(
    private readonly route: Route,
    private readonly self: unknown,
    private readonly args: unknown[],
    /** Undefined when the handler was called without HTTP (a test calling the controller). */
    private readonly reply: HttpReply | undefined,
  ) {}

  /**
   * Runs the route. The handler's Observable, if it returned one, is settled: its last value (as an
   * Observable again when `asObservable`, so that Nest answers an empty one as it would have). A value
   * the handler returned synchronously, with nothing to commit, comes back as it is.
   */
  run(asObservable: boolean): unknown {
    this.asObservable = asObservable;
    let result: unknown;
    try {
      result = this.route.runner.execute(this.route.options, this);
    } catch (error) {
      return this.failed(error);
    }
    if (!isThenable(result)) return this.done(result);
    return Promise.resolve(result).then(
      (value) => this.done(value),
      (error: unknown) => this.failed(error),
    );
  }

  private done(value: unknown): unknown {
    this.stopWatching();
    if (!this.returnedObservable) return value;
    if (!this.asObservable) return this.last;
    return this.emitted ? of(this.last) : EMPTY;
  }

  private failed(error: unknown): never {
    this.stopWatching();
    // Nobody is listening: answer as nginx logs it (499) instead of reporting a server error.
    if (this.aborted === undefined && !this.clientGone()) throw error;
    throw new HttpException('Client Closed Request', 499, { cause: error });
  }

  private get response(): ServerResponse | undefined {
    const reply = this.reply;
    return reply === undefined ? undefined : 'raw' in reply ? reply.raw : reply;
  }

  /** The connection closed before the response finished: the client went away. */
  private clientGone(): boolean {
    const response = this.response;
    return response !== undefined && response.destroyed && !response.writableFinished;
  }

  engaged(): void {
    const response = this.response;
    if (response === undefined) return;
    if (this.onClose === undefined) {
      const onClose = () => {
        if (!response.writableFinished) this.abort('the client disconnected');
      };
      this.onClose = onClose;
      response.once('close', onClose);
    }
    // Gone before its unit of work held anything: end it now, the work must not begin.
    if (this.clientGone()) this.abort('the client disconnected');
  }

  private stopWatching(): void {
    if (this.onClose !== undefined) this.response?.off('close', this.onClose);
  }

  /** The response stream was unsubscribed: roll back if the work has not ended. */
  cut(): void {
    if (this.ctx?.state === 'open') {
      this.subscription?.unsubscribe();
      this.abort('the response stream was unsubscribed');
    }
  }

  private abort(reason: string): void {
    this.aborted = reason;
    void this.ctx?.settle(false, reason);
  }

  get sites(): Map<string, string | null> {
    return this.route.sites;
  }

  describe(): string {
    const reply = this.reply;
    if (reply === undefined) return this.route.name;
    const request = ('raw' in reply ? reply.request : reply.req) as HttpRequest;
    const path = request.route?.path ?? request.routeOptions?.url ?? request.originalUrl ?? request.url;
    return `${request.method} ${path}`;
  }

  /** The runner retries only while this holds: an attempt never starts after a disconnect. */
  canRetry(): boolean {
    return this.aborted === undefined && !this.clientGone() && this.response?.headersSent !== true;
  }

  attempt(ctx: TransactionContext): unknown {
    this.ctx = ctx;
    const args = this.args;
    for (const tx of this.route.txArgs) args[tx.index] = ctx.manager(tx.dataSource ?? DEFAULT_DATA_SOURCE, tx.use);
    const result = this.route.original.apply(this.self, args);
    this.returnedObservable = isObservable(result);
    if (!this.returnedObservable) return result;
    this.emitted = false;
    return new Promise<void>((resolve, reject) => {
      this.subscription = (result as Observable<unknown>).subscribe({
        next: (value) => {
          this.emitted = true;
          this.last = value;
        },
        error: reject,
        complete: resolve,
      });
    });
  }
}
