import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { requireManager } from '../core/current-unit-of-work';
import { NoTransactionError } from '../errors';
import { checkDataSourceName } from '../repository/tx-repository';

const TxParam = createParamDecorator(txParam);

/**
 * The request transaction's `EntityManager` (of the named data source, default `'default'`).
 * Every query through it runs on the request's one connection. Nest resolves it with the handler's
 * other arguments, inside the unit of work `TransactionInterceptor` opened; where there is none (a
 * `@NoTransaction()` route, an `@Sse()` route, a handler the interceptor is not bound to) it fails with
 * `NoTransactionError`. A name that is not a non-empty string throws where the class is declared.
 * @example
 * @Post()
 * create(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
 *   return this.transfers.create(tx, dto);
 * }
 */
export function Tx(dataSource?: string): ParameterDecorator {
  if (dataSource === undefined) return TxParam();
  checkDataSourceName(dataSource, '@Tx()');
  return TxParam(dataSource);
}

function txParam(dataSource: string | undefined, context: ExecutionContext): unknown {
  const use = dataSource === undefined ? '@Tx()' : `@Tx('${dataSource}')`;
  try {
    return requireManager(dataSource, use);
  } catch (error) {
    const advice = error instanceof NoTransactionError ? transportAdvice(context) : undefined;
    if (advice === undefined) throw error;
    throw new NoTransactionError(`${(error as Error).message} ${advice}`);
  }
}

/** Where a transport misses the interceptor for a reason of Nest's, the way to bind it. */
function transportAdvice(context: ExecutionContext): string | undefined {
  switch (context.getType<string>()) {
    case 'ws':
      return (
        'If this handler should run in one: Nest binds no global interceptor to WebSocket gateways; add ' +
        '@UseInterceptors(TransactionInterceptor) to the gateway (or the handler).'
      );
    case 'rpc':
      return (
        'If this handler should run in one: a microservice connected to an HTTP application gets its global ' +
        'TransactionInterceptor only with app.connectMicroservice(options, { inheritAppConfig: true }); or add ' +
        '@UseInterceptors(TransactionInterceptor) to the controller.'
      );
    case 'graphql':
      return (
        "In GraphQL, subscriptions get no unit of work (run each event's work in TransactionRunner.run()), and " +
        "queries and mutations get one per operation when GraphQLModule has fieldResolverEnhancers: ['interceptors'] " +
        'and the server hook (apolloUnitOfWorkPlugin() or mercuriusUnitOfWorkHooks()).'
      );
    default:
      return undefined;
  }
}
