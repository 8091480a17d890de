import { HttpException } from '@nestjs/common';
import {
  RESPONSE_PASSTHROUGH_METADATA,
  INTERCEPTORS_METADATA,
  PATH_METADATA,
  ROUTE_ARGS_METADATA,
  SSE_METADATA,
} from '@nestjs/common/constants';
import type { ModulesContainer } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EMPTY, isObservable, Observable, of, type Subscription } from 'rxjs';
import { DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import type { TransactionContext } from '../core/transaction-context';
import type { TransactionRunner } from '../core/transaction-runner';
import { NO_TRANSACTION, TRANSACTIONAL_OPTIONS } from '../decorators/transactional.decorator';
import type { TransactionOptions } from '../transactional.options';
import { txParam, txUse, WRAPPED_HANDLER } from './tx-param';

/** Express and Fastify requests: the route pattern, for messages. */
type HttpRequest = IncomingMessage & { route?: { path?: string }; routeOptions?: { url?: string }; originalUrl?: string };
/** Express's response (`req` set by Express) or Fastify's reply. */
type HttpReply = (ServerResponse & { req?: HttpRequest }) | { raw: ServerResponse; request: HttpRequest };
type Handler = (...args: unknown[]) => unknown;

/**
 * Nest's built-in route parameter types (`RouteParamtypes`): the response, and `next`. The wrapper
 * needs the response (client disconnects, retries). Unless the handler takes it itself (`@Res()`), the
 * route gets one more argument past its own: Nest's response parameter, which costs Nest neither pipes
 * nor an execution context per request; the wrapper removes it before it calls the handler.
 */
const RESPONSE_PARAM = 1;
const NEXT_PARAM = 2;
/** On a controller method: the index of the response argument the library declared for it. */
const HIDDEN_RESPONSE = 'nestjs-request-transaction:hidden-response';

/** What a wrapped route knows, computed once at bootstrap. */
interface Route {
  readonly original: Handler;
  readonly runner: TransactionRunner;
  readonly options: TransactionOptions;
  /** Index of the response among Nest's arguments. */
  readonly responseIndex: number;
  /** Whether that argument is the library's own (past the handler's, removed before the call). */
  readonly hidden: boolean;
  /** `@Tx()` arguments, replaced by the unit of work's managers on every attempt. */
  readonly txArgs: ReadonlyArray<{ index: number; dataSource: string | undefined; use: string }>;
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
      ...routeArguments(controller, name, original),
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

/**
 * The route's `@Tx()` arguments, and where its response is: the handler's own `@Res()` argument, or one
 * declared (once per class and method: class metadata is shared by every application) past its own.
 */
function routeArguments(controller: Function, name: string, original: Handler): Pick<Route, 'responseIndex' | 'hidden' | 'txArgs'> {
  const metadata = (Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, name) ?? {}) as Record<
    string,
    { index: number; factory?: unknown; data?: unknown }
  >;
  const declared = Reflect.getMetadata(HIDDEN_RESPONSE, controller, name) as number | undefined;
  let own = Math.max(original.length, ((Reflect.getMetadata('design:paramtypes', controller.prototype, name) ?? []) as unknown[]).length);
  let usersResponse: number | undefined;
  let takesNext = false;
  const txArgs: Route['txArgs'][number][] = [];
  for (const [key, param] of Object.entries(metadata)) {
    if (param.index === declared) continue;
    own = Math.max(own, param.index + 1);
    if (key.startsWith(`${RESPONSE_PARAM}:`)) usersResponse = param.index;
    if (key.startsWith(`${NEXT_PARAM}:`)) takesNext = true;
    if (param.factory === txParam) {
      const dataSource = param.data as string | undefined;
      txArgs.push({ index: param.index, dataSource, use: txUse(dataSource) });
    }
  }
  if (declared !== undefined) return { responseIndex: declared, hidden: true, txArgs };
  if (usersResponse !== undefined) return { responseIndex: usersResponse, hidden: false, txArgs };
  Reflect.defineMetadata(
    ROUTE_ARGS_METADATA,
    { ...metadata, [`${RESPONSE_PARAM}:${own}`]: { index: own, data: undefined, pipes: [] } },
    controller,
    name,
  );
  // Nest answers for a handler that takes the response only with passthrough (`@Res({ passthrough: true })`).
  if (!takesNext) Reflect.defineMetadata(RESPONSE_PASSTHROUGH_METADATA, true, controller, name);
  Reflect.defineMetadata(HIDDEN_RESPONSE, own, controller, name);
  return { responseIndex: own, hidden: true, txArgs };
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
  const { responseIndex, hidden } = route;
  const handler = function (this: unknown, ...args: unknown[]): unknown {
    const reply = args[responseIndex] as HttpReply;
    if (hidden) args.length = responseIndex;
    const response = 'raw' in reply ? reply.raw : reply;
    const request = ('raw' in reply ? reply.request : reply.req) as HttpRequest;
    if (!intercepted) return new RouteCall(route, this, args, request, response).run();
    return new Observable((subscriber) => {
      const call = new RouteCall(route, this, args, request, response);
      call.run(false).then(
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
 * ROLLBACK, and a client that disconnects first gets its transaction rolled back.
 */
class RouteCall {
  private ctx?: TransactionContext;
  private aborted?: string;
  private subscription?: Subscription;
  returnedObservable = false;
  emitted = false;
  private last: unknown;

  constructor(
    private readonly route: Route,
    private readonly self: unknown,
    private readonly args: unknown[],
    private readonly request: HttpRequest,
    private readonly response: ServerResponse,
  ) {}

  /**
   * Runs the route. The handler's Observable, if it returned one, is settled: its last value (as an
   * Observable again when `asObservable`, so that Nest answers an empty one as it would have).
   */
  run(asObservable = true): Promise<unknown> {
    const { response } = this;
    response.once('close', this.onClose);
    return this.route.runner.execute(this.route.options, this.describe, this.attempt, this.canRetry).then(
      (value) => {
        response.off('close', this.onClose);
        if (!this.returnedObservable) return value;
        if (!asObservable) return this.last;
        return this.emitted ? of(this.last) : EMPTY;
      },
      (error: unknown) => {
        response.off('close', this.onClose);
        // Nobody is listening: answer as nginx logs it (499) instead of reporting a server error.
        throw this.aborted === undefined ? error : new HttpException('Client Closed Request', 499, { cause: error });
      },
    );
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

  private readonly describe = (): string => {
    const request = this.request;
    const path = request.route?.path ?? request.routeOptions?.url ?? request.originalUrl ?? request.url;
    return `${request.method} ${path}`;
  };

  private readonly onClose = (): void => {
    // 'close' before the response finished: the client went away mid-request.
    if (!this.response.writableFinished) this.abort('the client disconnected');
  };

  /** The runner retries only while this holds: an attempt never starts after a disconnect. */
  private readonly canRetry = (): boolean => this.aborted === undefined && !this.response.headersSent;

  private readonly attempt = (ctx: TransactionContext): unknown => {
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
  };
}
