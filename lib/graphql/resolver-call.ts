import { type CallHandler, type ExecutionContext, Logger } from '@nestjs/common';
import { Observable, type Subscriber } from 'rxjs';
import { unitOfWorkStorage } from '../core/unit-of-work-storage';
import { TransactionalError, TransactionalOptionsError } from '../errors';
import type { Route } from '../interceptor/handler-call';
import { GraphQLOperation, type OperationNode } from './graphql-operation';

/** What a resolver's `info` (graphql-js's `GraphQLResolveInfo`) tells, read structurally: graphql is no dependency. */
interface ResolveInfo {
  readonly fieldName: string;
  readonly parentType?: { readonly name: string };
  readonly operation?: OperationNode;
}

const logger = new Logger('TransactionalModule');
/** Errors whose message already names their field: a field's error is seen once per resolver it passes. */
const named = new WeakSet<object>();

/**
 * A resolver call (root field or `@ResolveField`) of a GraphQL operation: runs it inside the
 * operation's unit of work, opened by the first resolver that runs. The resolver's value goes out at
 * once: the operation, not the resolver, commits, when its server's hook ends it. Subscriptions pass
 * through, like `@Sse()` routes: an event stream must not hold a transaction.
 */
export function interceptResolver(route: Route, context: ExecutionContext, next: CallHandler): Observable<unknown> {
  // Nest passes a resolver graphql-js's arguments: (parent, args, context, info).
  const info = context.getArgByIndex<ResolveInfo | undefined>(3);
  if (info?.operation?.operation === 'subscription') return next.handle();
  const operation = GraphQLOperation.of(context.getArgByIndex<unknown>(2));
  if (operation === undefined) throw missingPlugin(context, info);
  const unitOfWork = operation.join(route.runner, route.options, route.sites, info?.operation);
  return new Observable((subscriber) =>
    // Nest binds handle() to the async context it is called in: the resolver runs in the unit of work.
    unitOfWorkStorage.run(unitOfWork, () => next.handle().subscribe(new ResolverObserver(subscriber, operation, info))),
  );
}

/** Passes the resolver's values through; names the field in the library's errors and keeps their detail from clients in production. */
class ResolverObserver {
  constructor(
    private readonly subscriber: Subscriber<unknown>,
    private readonly operation: GraphQLOperation,
    private readonly info: ResolveInfo | undefined,
  ) {}

  next(value: unknown): void {
    this.subscriber.next(value);
  }

  error(error: unknown): void {
    this.subscriber.error(error instanceof TransactionalError ? this.explain(error) : error);
  }

  complete(): void {
    this.subscriber.complete();
  }

  private explain(error: TransactionalError): TransactionalError {
    const label = this.operation.describe();
    if (!named.has(error) && this.info !== undefined) {
      named.add(error);
      const field = `${this.info.parentType?.name ?? '?'}.${this.info.fieldName}`;
      // The message names the unit of work as `… of mutation createOrder`: the field goes beside it.
      const at = error.message.indexOf(label);
      error.message =
        at < 0
          ? `${error.message} (field ${field})`
          : `${error.message.slice(0, at + label.length)}, field ${field}${error.message.slice(at + label.length)}`;
    }
    return clientSafe(error, label);
  }
}

/**
 * In production a client never sees the library's internal detail (file paths, call sites, SQL):
 * the error goes to the log whole, and the client gets a message naming only its operation.
 */
export function clientSafe(error: TransactionalError, label: string): TransactionalError {
  if (process.env.NODE_ENV !== 'production') return error;
  // The message as it is now (a resolver's field added), and the stack for the call sites.
  logger.error(error.message, error.stack);
  return new TransactionalError(`The transaction of ${label} failed; the server log has the detail.`);
}

function missingPlugin(context: ExecutionContext, info: ResolveInfo | undefined): TransactionalOptionsError {
  const field =
    info !== undefined
      ? `${info.parentType?.name ?? '?'}.${info.fieldName}`
      : `${context.getClass().name}.${context.getHandler().name}()`;
  return new TransactionalOptionsError(
    `The resolver ${field} ran in a GraphQL operation that TransactionalModule was not told of: a unit of work ` +
      `per operation needs the server's hook, so that it commits before the response is sent. Add ` +
      `plugins: [apolloUnitOfWorkPlugin()] (Apollo) or hooks: mercuriusUnitOfWorkHooks() (Mercurius) to ` +
      `GraphQLModule.forRoot(), or mark the resolver @NoTransaction().`,
  );
}
