import { SetMetadata } from '@nestjs/common';
import { TransactionalOptionsError } from '../errors';
import { checkedTransactionOptions } from '../options-check';
import { type TransactionalMethodOptions, wrapClass, wrapDescriptor } from './transactional-method';

export const TRANSACTIONAL_OPTIONS = 'nestjs-request-transaction:options';
export const NO_TRANSACTION = 'nestjs-request-transaction:none';

/**
 * Runs a method in a unit of work: on a route handler or a controller, the request's settings (the
 * handler's win over the class's, which win over the module's); on any provider method (services,
 * CQRS handlers, cron jobs, queue consumers), the method joins the unit of work open around it
 * (`propagation: 'nested'`: in a savepoint of it) or, with none open, runs in a new one with these
 * options, like `TransactionRunner.run()`. On a class, every method. Bad options throw where it is
 * declared; the options are copied then, so changing the object afterwards changes nothing.
 * @example
 * @Get('report')
 * @Transactional({ isolationLevel: 'REPEATABLE READ', readOnly: true, timeoutMs: 2000 })
 * report(@Tx() tx: EntityManager) { … }
 *
 * @Transactional({ retry: true })
 * async settleInvoices(): Promise<void> { … } // in a service: its own unit of work when called from a cron job
 */
export function Transactional(options?: TransactionalMethodOptions): ClassDecorator & MethodDecorator {
  const checked = checkedTransactionOptions<TransactionalMethodOptions>(options, '@Transactional()', [
    'propagation',
    'dataSource',
  ]);
  const metadata = SetMetadata(TRANSACTIONAL_OPTIONS, checked);
  return ((target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    if (key === undefined) {
      metadata(target as Function);
      wrapClass(target as Function, checked);
      return;
    }
    if (descriptor === undefined) {
      throw new TransactionalOptionsError(`@Transactional() on ${String(key)}: it wraps a method, not a property.`);
    }
    wrapDescriptor(target, key, descriptor, checked);
    metadata(target, key, descriptor);
    return descriptor;
  }) as ClassDecorator & MethodDecorator;
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
