/**
 * What the interceptor does with GraphQL resolvers outside an operation's unit of work: subscriptions
 * pass through as if it were absent, a resolver of an operation no server hook started fails saying
 * which hook to add, and `@Tx()` there says why it has no transaction to give.
 */
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { Reflector } from '@nestjs/core';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import { of } from 'rxjs';
import { NoTransactionError, TransactionalOptionsError, TransactionInterceptor, type TransactionRunner, Tx } from '../../lib';

class Resolver {
  transfers(): string[] {
    return [];
  }
}

function graphqlContext(operation = 'query'): ExecutionContextHost {
  const info = { fieldName: 'transfers', parentType: { name: 'Query' }, operation: { operation, name: { value: 'Transfers' } } };
  const context = new ExecutionContextHost([{}, {}, {}, info], Resolver, Resolver.prototype.transfers);
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
  it('passes a subscription through: the handler’s own stream, and no unit of work', () => {
    const execute = jest.fn();
    const interceptor = new TransactionInterceptor({ execute } as unknown as TransactionRunner, new Reflector());
    const stream = of('resolved');

    expect(interceptor.intercept(graphqlContext('subscription'), { handle: () => stream })).toBe(stream);
    expect(execute).not.toHaveBeenCalled();
  });

  it('fails a resolver of an operation no server hook started, naming the field and the hooks', () => {
    const execute = jest.fn();
    const interceptor = new TransactionInterceptor({ execute } as unknown as TransactionRunner, new Reflector());

    expect(() => interceptor.intercept(graphqlContext(), { handle: () => of('resolved') })).toThrow(TransactionalOptionsError);
    expect(() => interceptor.intercept(graphqlContext(), { handle: () => of('resolved') })).toThrow(
      /^The resolver Query\.transfers ran in a GraphQL operation .+plugins: \[apolloUnitOfWorkPlugin\(\)\] \(Apollo\) or hooks: mercuriusUnitOfWorkHooks\(\)/,
    );
    expect(execute).not.toHaveBeenCalled();
  });

  it('fails @Tx() with NoTransactionError saying how a resolver gets a unit of work', () => {
    const factory = txFactory();
    expect(() => factory(undefined, graphqlContext())).toThrow(NoTransactionError);
    expect(() => factory(undefined, graphqlContext())).toThrow(
      /^@Tx\(\) was used outside a unit of work.+ In GraphQL, subscriptions get no unit of work .+fieldResolverEnhancers: \['interceptors'\]/,
    );
  });
});
