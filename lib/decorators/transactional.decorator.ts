import { SetMetadata } from '@nestjs/common';
import { checkedTransactionOptions, type TransactionOptions } from '../transactional.options';

export const TRANSACTIONAL_OPTIONS = 'nestjs-request-transaction:options';
export const NO_TRANSACTION = 'nestjs-request-transaction:none';

/**
 * Per-route transaction settings on a controller class or a handler; the handler's win over the
 * class's, which win over the module's. Bad options throw when the class is declared; the options are
 * copied then, so changing the object afterwards changes nothing.
 * @example
 * @Get('report')
 * @Transactional({ isolationLevel: 'REPEATABLE READ', readOnly: true, timeoutMs: 2000 })
 * report(@Tx() tx: EntityManager) { … }
 */
export function Transactional(options?: TransactionOptions): ClassDecorator & MethodDecorator {
  return SetMetadata(TRANSACTIONAL_OPTIONS, checkedTransactionOptions(options, '@Transactional()'));
}

/**
 * The route runs as if the module were absent: no unit of work, no guard. For health checks, streams
 * and routes that manage their own transactions.
 * @example
 * @Get('health')
 * @NoTransaction()
 * health() { return 'ok'; }
 */
export function NoTransaction(): ClassDecorator & MethodDecorator {
  return SetMetadata(NO_TRANSACTION, true);
}
