import { type CallHandler, type ExecutionContext, Injectable, type NestInterceptor } from '@nestjs/common';
import { SSE_METADATA } from '@nestjs/common/constants';
import { Reflector } from '@nestjs/core';
import { Observable } from 'rxjs';
import { currentUnitOfWork } from '../core/current-unit-of-work';
import { TransactionRunner } from '../core/transaction-runner';
import { NO_TRANSACTION, TRANSACTIONAL_OPTIONS } from '../decorators/transactional.decorator';
import type { TransactionOptions } from '../transactional.options';
import { interceptResolver } from '../graphql/resolver-call';
import { HandlerCall, type Route } from './handler-call';

/** A handler's route, with the controller it was read for. */
interface CachedRoute {
  readonly controller: Function;
  readonly route: Route | false;
}

/**
 * The hook: runs every HTTP request, microservice message (`@MessagePattern`, `@EventPattern`) and
 * WebSocket message (`@SubscribeMessage`) in a unit of work, and every GraphQL operation in one that its
 * root and field resolvers share (see `apolloUnitOfWorkPlugin()`). Middleware and guards run before it,
 * outside; the interceptors bound after it, the pipes (`@Tx()` included) and the handler run inside.
 * The handler's value is emitted only after COMMIT succeeded; an error is emitted after ROLLBACK, to
 * the exception filters. `@NoTransaction()` handlers and `@Sse()` routes pass through, and so does
 * GraphQL subscriptions and every other context type; bound twice, the inner one joins the outer one's unit.
 *
 * `TransactionalModule.forRoot()` binds it globally; with `forRoot({ mount: false })` bind it yourself.
 * @example
 * @Controller('transfers')
 * @UseInterceptors(TransactionInterceptor, ClassSerializerInterceptor)
 * export class TransfersController { … }
 */
@Injectable()
export class TransactionInterceptor implements NestInterceptor {
  /** Per handler, computed on its first call: the hot path reads no metadata. False: pass through. */
  private readonly routes = new WeakMap<Function, CachedRoute>();
  /** Handlers that several controllers inherit (each with its own class-level options): per controller. */
  private readonly inherited = new WeakMap<Function, WeakMap<Function, Route | false>>();

  constructor(
    private readonly runner: TransactionRunner,
    private readonly reflector: Reflector,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const type = context.getType<string>();
    const graphql = type === 'graphql';
    // Custom transports get no unit of work: they pass through, as without the module.
    if (type !== 'http' && type !== 'rpc' && type !== 'ws' && !graphql) return next.handle();
    const cached = this.routes.get(context.getHandler());
    const route = cached !== undefined && cached.controller === context.getClass() ? cached.route : this.routeOf(context);
    // A resolver joins its operation's unit of work, which the GraphQL server's hook ends.
    if (graphql) return route === false ? next.handle() : interceptResolver(route, context, next);
    // Pass-through routes, and a call inside an open unit of work (the interceptor bound twice, globally
    // and on the controller): that unit of work is the call's, as TransactionRunner.run() joins it.
    if (route === false || currentUnitOfWork()?.state === 'open') return next.handle();
    return new Observable((subscriber) => new HandlerCall(route, context, next, subscriber).start());
  }

  private routeOf(context: ExecutionContext): Route | false {
    const handler = context.getHandler();
    const controller = context.getClass();
    if (this.routes.has(handler)) {
      let routes = this.inherited.get(controller);
      if (routes === undefined) this.inherited.set(controller, (routes = new WeakMap()));
      let route = routes.get(handler);
      if (route === undefined) routes.set(handler, (route = this.read(handler, controller)));
      return route;
    }
    const route = this.read(handler, controller);
    this.routes.set(handler, { controller, route });
    return route;
  }

  private read(handler: Function, controller: Function): Route | false {
    // Server-sent events stream for as long as the client listens: holding a transaction (and a
    // pooled connection) that long is what this library exists to prevent. Nest offers no public way
    // to tell an @Sse() route but its metadata key.
    const skip =
      this.reflector.getAllAndOverride<boolean | undefined>(NO_TRANSACTION, [handler, controller]) === true ||
      this.reflector.get<boolean | undefined>(SSE_METADATA, handler) === true;
    return skip
      ? false
      : {
          runner: this.runner,
          options: {
            ...this.reflector.get<TransactionOptions | undefined>(TRANSACTIONAL_OPTIONS, controller),
            ...this.reflector.get<TransactionOptions | undefined>(TRANSACTIONAL_OPTIONS, handler),
          },
          sites: new Map(),
          holdTimes: new Map(),
        };
  }
}
