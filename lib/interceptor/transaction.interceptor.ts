import { type CallHandler, type ExecutionContext, HttpException, Injectable, type NestInterceptor } from '@nestjs/common';
import { SSE_METADATA } from '@nestjs/common/constants';
import { Reflector } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Observable, type Subscription } from 'rxjs';
import type { TransactionContext } from '../core/transaction-context';
import { TransactionRunner } from '../core/transaction-runner';
import { NO_TRANSACTION, TRANSACTIONAL_OPTIONS } from '../decorators/transactional.decorator';
import type { TransactionOptions } from '../transactional.options';

/** A route's transaction policy, read once per handler from its metadata. */
type RoutePolicy = { skip: true } | { skip: false; options: TransactionOptions };

/** Express and Fastify requests: the route pattern, for messages. */
type HttpRequest = IncomingMessage & { route?: { path?: string }; routeOptions?: { url?: string }; originalUrl?: string };

/**
 * Gives every HTTP request its unit of work: the handler runs inside it, its value is emitted only
 * after COMMIT succeeded, an error is rethrown after ROLLBACK, and a client that disconnects first
 * gets its transaction rolled back. Routes marked `@NoTransaction()` and `@Sse()` routes pass through.
 */
@Injectable()
export class TransactionInterceptor implements NestInterceptor {
  private readonly policies = new WeakMap<object, RoutePolicy>();

  constructor(
    private readonly runner: TransactionRunner,
    private readonly reflector: Reflector,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const policy = this.policyOf(context);
    if (policy.skip) return next.handle();

    const http = context.switchToHttp();
    const request = http.getRequest<HttpRequest>();
    const reply = http.getResponse<ServerResponse | { raw: ServerResponse }>();
    const response = 'raw' in reply ? reply.raw : reply;

    return new Observable((subscriber) => {
      let ctx: TransactionContext | undefined;
      let handler: Subscription | undefined;
      let aborted: string | undefined;
      const abort = (reason: string) => {
        aborted = reason;
        void ctx?.settle(false, reason);
      };
      const onClose = () => {
        // 'close' before the response finished: the client went away mid-request.
        if (!response.writableFinished) abort('the client disconnected');
      };
      response.once('close', onClose);

      let emitted = false;
      let last: unknown;
      // One attempt: run the handler in the attempt's unit of work (again, on a retry; the runner
      // retries only while canRetry() holds, so an attempt never starts after a disconnect).
      const attempt = (current: TransactionContext) => {
        ctx = current;
        emitted = false;
        return new Promise<void>((resolve, reject) => {
          // handle() binds the async context it is called in: it runs inside the unit of work.
          handler = next.handle().subscribe({
            next: (value) => {
              emitted = true;
              last = value;
            },
            error: reject,
            complete: resolve,
          });
        });
      };

      const canRetry = () => aborted === undefined && !response.headersSent;
      this.runner.execute(policy.options, () => describeRoute(request), attempt, canRetry).then(
        () => {
          response.off('close', onClose);
          if (emitted) subscriber.next(last);
          subscriber.complete();
        },
        (error: unknown) => {
          response.off('close', onClose);
          // Nobody is listening: answer as nginx logs it (499) instead of reporting a server error.
          subscriber.error(aborted === undefined ? error : new HttpException('Client Closed Request', 499, { cause: error }));
        },
      );
      // Unsubscribed before the work ended: roll back.
      return () => {
        if (ctx?.state === 'open') {
          handler?.unsubscribe();
          abort('the response stream was unsubscribed');
        }
      };
    });
  }

  private policyOf(context: ExecutionContext): RoutePolicy {
    const handler = context.getHandler();
    let policy = this.policies.get(handler);
    if (policy === undefined) {
      const targets = [handler, context.getClass()];
      // Server-sent events stream for as long as the client listens: holding a transaction (and a
      // pooled connection) that long is what this library exists to prevent.
      const skip =
        this.reflector.getAllAndOverride<boolean>(NO_TRANSACTION, targets) === true ||
        Reflect.getMetadata(SSE_METADATA, handler) === true;
      policy = skip
        ? { skip: true }
        : {
            skip: false,
            options: {
              ...this.reflector.get<TransactionOptions>(TRANSACTIONAL_OPTIONS, context.getClass()),
              ...this.reflector.get<TransactionOptions>(TRANSACTIONAL_OPTIONS, handler),
            },
          };
      this.policies.set(handler, policy);
    }
    return policy;
  }
}

function describeRoute(request: HttpRequest): string {
  const path = request.route?.path ?? request.routeOptions?.url ?? request.originalUrl ?? request.url;
  return `${request.method} ${path}`;
}
