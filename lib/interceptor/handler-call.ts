import { type CallHandler, type ExecutionContext, HttpException } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Observer, Subscriber, Subscription, Unsubscribable } from 'rxjs';
import type { HoldTimesCache } from '../core/connection-clock';
import type { RouteHoldTimes } from '../core/route-hold-times';
import type { UnitOfWork } from '../core/unit-of-work';
import type { UnitOfWorkOwner } from '../core/unit-of-work-owner';
import { isThenable, type TransactionRunner } from '../core/transaction-runner';
import type { TransactionOptions } from '../transactional.options';

/** What the interceptor knows of a handler, read once from its metadata. */
export interface Route {
  readonly runner: TransactionRunner;
  readonly options: TransactionOptions;
  /** Where the route's first unit of work took its connections (see `UnitOfWorkOwner.sites`). */
  readonly sites: Map<string, string | null>;
  /** The route's hold times, by data source (see `HoldTimesCache`): found once, not by label on every request. */
  readonly holdTimes: Map<string, RouteHoldTimes>;
}

/** Express and Fastify requests: the route pattern, for messages. */
type HttpRequest = IncomingMessage & { route?: { path?: string }; routeOptions?: { url?: string }; originalUrl?: string };
/** Express's response, or Fastify's reply around it. */
type HttpReply = ServerResponse | { raw: ServerResponse };
/** What the contexts of Nest's transports answer (TCP and RMQ: pattern, NATS: subject, Redis: channel, Kafka and MQTT: topic). */
type TransportContext = { getPattern?(): unknown; getSubject?(): unknown; getChannel?(): unknown; getTopic?(): unknown };

/**
 * One call of a handler (an HTTP request, a microservice message, a WebSocket message) as a unit of
 * work: the handler's stream (`next.handle()`, with the pipes and the interceptors bound after this
 * one) is subscribed inside it, again in a fresh one on a retry. Its values are held until COMMIT
 * succeeded, then emitted; an error is emitted after ROLLBACK. An HTTP request is watched for a client
 * disconnect from the moment its unit of work holds something to roll back, and an unsubscription
 * (an outer interceptor's timeout) rolls back at once. The call is its own observer of the handler's
 * stream and its own teardown, so that a request allocates few closures: the subscribe function, the
 * attempt's promise executor and the two callbacks on the unit of work's outcome.
 */
export class HandlerCall implements UnitOfWorkOwner, HoldTimesCache, Observer<unknown>, Unsubscribable {
  private ctx?: UnitOfWork;
  private inner?: Subscription;
  private resolve?: () => void;
  private reject?: (error: unknown) => void;
  /** Values of the current attempt: the last one, and those before it when there were several. */
  private count = 0;
  private last: unknown;
  private earlier?: unknown[];
  private aborted?: string;
  private ended = false;
  private onClose?: () => void;
  /** The raw HTTP response, once looked up; null when the call is no HTTP request. */
  private response?: ServerResponse | null;

  constructor(
    private readonly route: Route,
    private readonly context: ExecutionContext,
    private readonly handler: CallHandler,
    private readonly subscriber: Subscriber<unknown>,
  ) {}

  /** Runs the unit of work; returns the teardown rxjs calls when the call is unsubscribed. */
  start(): Unsubscribable {
    let result: unknown;
    try {
      result = this.route.runner.execute(this.route.options, this);
    } catch (error) {
      this.failed(error);
      return this;
    }
    if (isThenable(result)) {
      result.then(
        () => this.done(),
        (error: unknown) => this.failed(error),
      );
    } else {
      this.done();
    }
    return this;
  }

  /** One attempt: subscribes to the handler's stream inside `ctx` (Nest binds `handle()` to the async context it is called in). */
  attempt(ctx: UnitOfWork): Promise<void> {
    this.ctx = ctx;
    this.count = 0;
    this.last = undefined;
    this.earlier = undefined;
    return new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.inner = this.handler.handle().subscribe(this);
    });
  }

  /** A value of the handler's stream: held until COMMIT. */
  next(value: unknown): void {
    if (this.count > 0) (this.earlier ??= []).push(this.last);
    this.last = value;
    this.count += 1;
  }

  error(error: unknown): void {
    this.reject!(error);
  }

  complete(): void {
    this.resolve!();
  }

  /** Committed (or nothing to commit): the held values go out. */
  private done(): void {
    this.end();
    const subscriber = this.subscriber;
    if (this.earlier !== undefined) for (const value of this.earlier) subscriber.next(value);
    if (this.count > 0) subscriber.next(this.last);
    subscriber.complete();
  }

  /** Rolled back: the error goes out, to the exception filters. */
  private failed(error: unknown): void {
    this.end();
    // Nobody is listening: answer as nginx logs it (499) instead of reporting a server error.
    const gone = this.aborted !== undefined || this.clientGone();
    this.subscriber.error(gone ? new HttpException('Client Closed Request', 499, { cause: error }) : error);
  }

  private end(): void {
    this.ended = true;
    if (this.onClose !== undefined) this.response?.off('close', this.onClose);
  }

  /** The teardown: unsubscribed before the unit of work ended (a timeout cut the stream), it rolls back. */
  unsubscribe(): void {
    if (this.ended) return;
    this.ended = true;
    this.inner?.unsubscribe();
    const reason = 'the response stream was unsubscribed';
    this.abort(reason);
    // The handler's stream will not end now: end the attempt, so that the runner settles and stops.
    const ctx = this.ctx;
    if (ctx !== undefined) this.reject?.(ctx.finishedError(`the handler of ${this.describe()}`));
    if (this.onClose !== undefined) this.response?.off('close', this.onClose);
  }

  private abort(reason: string): void {
    this.aborted ??= reason;
    const ctx = this.ctx;
    if (ctx !== undefined && ctx.state === 'open') void ctx.settle(false, reason);
  }

  /** The raw HTTP response, or undefined when the call is not an HTTP request. */
  private httpResponse(): ServerResponse | undefined {
    if (this.response === undefined) {
      const reply = this.context.getType() === 'http' ? this.context.getArgByIndex<HttpReply | undefined>(1) : undefined;
      this.response = reply === undefined || reply === null ? null : 'raw' in reply ? reply.raw : reply;
    }
    return this.response ?? undefined;
  }

  /** The connection closed before the response finished: the client went away. */
  private clientGone(): boolean {
    const response = this.httpResponse();
    return response !== undefined && response.destroyed && !response.writableFinished;
  }

  /** The unit of work is about to hold a connection or a hook: from now on, a client disconnect rolls it back. */
  engaged(): void {
    const response = this.httpResponse();
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

  /** The runner retries only while this holds: an attempt never starts after a disconnect or a sent response. */
  canRetry(): boolean {
    return this.aborted === undefined && !this.clientGone() && this.httpResponse()?.headersSent !== true;
  }

  get sites(): Map<string, string | null> {
    return this.route.sites;
  }

  get holdTimes(): Map<string, RouteHoldTimes> {
    return this.route.holdTimes;
  }

  /** `POST /transfers`, `RPC transfers.create`, `WS message events`. */
  describe(): string {
    const context = this.context;
    switch (context.getType()) {
      case 'http': {
        const request = context.getArgByIndex<HttpRequest>(0);
        const path = request.route?.path ?? request.routeOptions?.url ?? request.originalUrl ?? request.url;
        return `${request.method} ${path}`;
      }
      case 'rpc': {
        const transport = context.getArgByIndex<TransportContext | undefined>(1);
        const pattern =
          transport?.getPattern?.() ?? transport?.getSubject?.() ?? transport?.getChannel?.() ?? transport?.getTopic?.();
        return `RPC ${typeof pattern === 'string' ? pattern : this.methodName()}`;
      }
      default: {
        // Nest passes a gateway handler its message's pattern as the last argument.
        const pattern = context.getArgByIndex<unknown>(context.getArgs().length - 1);
        return `WS message ${typeof pattern === 'string' ? pattern : this.methodName()}`;
      }
    }
  }

  private methodName(): string {
    return `${this.context.getClass().name}.${this.context.getHandler().name}()`;
  }
}
