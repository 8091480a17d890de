import type { ExecutionContext } from '@nestjs/common';
import { requireManager } from '../core/transaction-context';

/** On a route handler that runs in its own unit of work: set by the route wrapper. */
export const WRAPPED_HANDLER = Symbol('nestjs-request-transaction:wrapped-handler');

/**
 * What `@Tx()` resolves to on a wrapped route: parameter decorators run before the handler, outside
 * its unit of work, so the wrapper puts the unit of work's manager in its place (on every attempt).
 */
export class TxPlaceholder {
  private static readonly byDataSource = new Map<string | undefined, TxPlaceholder>();

  private constructor(readonly dataSource: string | undefined) {}

  static of(dataSource: string | undefined): TxPlaceholder {
    let placeholder = TxPlaceholder.byDataSource.get(dataSource);
    if (placeholder === undefined) {
      placeholder = Object.freeze(new TxPlaceholder(dataSource));
      TxPlaceholder.byDataSource.set(dataSource, placeholder);
    }
    return placeholder;
  }
}

/** The label `@Tx()` is named by in messages. */
export function txUse(dataSource: string | undefined): string {
  return dataSource === undefined ? '@Tx()' : `@Tx('${dataSource}')`;
}

/** `@Tx()`'s parameter factory. */
export function txParam(dataSource: string | undefined, context: ExecutionContext): unknown {
  const handler = context.getHandler() as { [WRAPPED_HANDLER]?: true } | undefined;
  if (handler?.[WRAPPED_HANDLER] === true) return TxPlaceholder.of(dataSource);
  return requireManager(dataSource, txUse(dataSource));
}
