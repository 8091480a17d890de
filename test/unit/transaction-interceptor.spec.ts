/**
 * What the interceptor does with context types it gives no unit of work yet (GraphQL): it passes
 * them through as if it were absent, and `@Tx()` there says why it has no transaction to give.
 */
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { Reflector } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import { of } from 'rxjs';
import { NoTransactionError, TransactionInterceptor, type TransactionRunner, Tx } from '../../lib';

class Resolver {
  transfers(): string[] {
    return [];
  }
}

function graphqlContext(): ExecutionContextHost {
  const context = new ExecutionContextHost([{}, {}, {}, {}], Resolver, Resolver.prototype.transfers);
  context.setType('graphql');
  return context;
}

/** The factory `createParamDecorator()` registered for `@Tx()`. */
function txFactory(): (data: unknown, context: ExecutionContextHost) => unknown {
  class Probe {
    handle(@Tx() _tx: unknown): void {}
  }
  const args = Reflect.getMetadata(ROUTE_ARGS_METADATA, Probe, 'handle') as Record<string, { factory: never }>;
  return Object.values(args)[0].factory;
}

describe('TransactionInterceptor on a GraphQL resolver', () => {
  it('passes the call through: the handler’s own stream, and no unit of work', () => {
    const execute = jest.fn();
    const interceptor = new TransactionInterceptor({ execute } as unknown as TransactionRunner, new Reflector());
    const stream = of('resolved');

    expect(interceptor.intercept(graphqlContext(), { handle: () => stream })).toBe(stream);
    expect(execute).not.toHaveBeenCalled();
  });

  it('fails @Tx() with NoTransactionError saying resolvers get no unit of work yet', () => {
    const factory = txFactory();
    expect(() => factory(undefined, graphqlContext())).toThrow(NoTransactionError);
    expect(() => factory(undefined, graphqlContext())).toThrow(
      /^@Tx\(\) was used outside a unit of work.+ GraphQL resolvers get no unit of work yet: run the work in TransactionRunner\.run\(\)\.$/,
    );
  });
});
