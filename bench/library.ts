import type { DynamicModule, Type } from '@nestjs/common';

/**
 * The library under test, loaded at run time as a user loads it: by package name, which resolves
 * (package self-reference through `exports`) to the built `dist/`. Types are declared here rather
 * than imported, so `bench/` type-checks whether or not `dist/` exists, and compiling the bench
 * never compiles `lib/`. Only the members the bench uses.
 */
export interface Library {
  TransactionalModule: {
    /** `mount: false`: the interceptor is not bound globally. Other keys (`module-idle-off`) are passed as given. */
    forRoot(options: { guard: 'throw' | 'warn' | 'off'; mount?: boolean; [option: string]: unknown }): DynamicModule;
    forFeature(entities: Function[]): DynamicModule;
  };
  TransactionInterceptor: Type;
  Tx(dataSource?: string): ParameterDecorator;
  Transactional(options: { guard: 'throw' | 'warn' | 'off' }): MethodDecorator;
  InjectTxRepository(entity: Function): ParameterDecorator;
  /** Apollo Server plugin that settles each operation's unit of work (docs/graphql.md). */
  apolloUnitOfWorkPlugin(): unknown;
  /** Mercurius hooks that settle each operation's unit of work (docs/graphql.md). */
  mercuriusUnitOfWorkHooks(): Record<string, unknown>;
}

export function loadLibrary(): Library {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('nestjs-request-transaction') as Library;
}

/** Where the package name resolves: printed by the runner, so a run shows what it measured. */
export function libraryPath(): string {
  return require.resolve('nestjs-request-transaction');
}
