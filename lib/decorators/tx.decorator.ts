import { createParamDecorator } from '@nestjs/common';
import { requireManager } from '../core/transaction-context';

/**
 * The request transaction's `EntityManager` (of the named data source, default `'default'`).
 * Every query through it runs on the request's one connection. Nest resolves it with the handler's
 * other arguments, inside the unit of work `TransactionInterceptor` opened; where there is none (a
 * `@NoTransaction()` route, an `@Sse()` route, a handler the interceptor is not bound to) it fails with
 * `NoTransactionError`.
 * @example
 * @Post()
 * create(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
 *   return this.transfers.create(tx, dto);
 * }
 */
export const Tx = createParamDecorator((dataSource: string | undefined) =>
  requireManager(dataSource, dataSource === undefined ? '@Tx()' : `@Tx('${dataSource}')`),
);
