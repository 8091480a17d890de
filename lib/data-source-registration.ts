/**
 * What `forRoot()` / `forRootAsync()` add for one data source: the modules every call shares, and the
 * provider that, once the data source exists, checks it and registers it with the guard installed.
 */
import { type DynamicModule, Global, Module } from '@nestjs/common';
import { APP_INTERCEPTOR, DiscoveryModule } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { checkCompatibility } from './compat/check-compatibility';
import { DataSourceRegistry, DEFAULT_DATA_SOURCE } from './core/data-source-registry';
import { dialectOf } from './core/dialect';
import { DataSourceCounters } from './core/stats';
import { TransactionHost, TransactionRunner } from './core/transaction-runner';
import { TransactionalMethodBinding } from './decorators/transactional-method';
import { describeValue as describe, TransactionalOptionsError } from './errors';
import { GraphQLSetupCheck } from './graphql/graphql-setup-check';
import { installConnectionGuard } from './guard/connection-guard';
import { TransactionInterceptor } from './interceptor/transaction.interceptor';
import { checkSingleConnectionPool } from './testing/single-connection-pool';
import { MODULE_OPTIONS_TOKEN } from './transactional.module-definition';
import { resolveModuleOptions } from './options-check';
import type { ResolvedModuleOptions, TransactionalModuleExtras } from './transactional.options';

/** What every `forRoot()` shares within one application: one registry, one runner, one interceptor. */
@Global()
@Module({
  imports: [DiscoveryModule],
  providers: [DataSourceRegistry, TransactionRunner, TransactionHost, TransactionalMethodBinding, TransactionInterceptor],
  exports: [DataSourceRegistry, TransactionRunner, TransactionHost, TransactionInterceptor],
})
export class TransactionalCoreModule {}

/**
 * Binds `TransactionInterceptor` globally. A static module: however many `forRoot()` calls import it,
 * Nest creates it, and so binds the interceptor, once.
 */
@Module({
  providers: [{ provide: APP_INTERCEPTOR, useExisting: TransactionInterceptor }, GraphQLSetupCheck],
})
export class TransactionInterceptorMount {}

export type Method = 'forRoot' | 'forRootAsync';

export function where(method: Method, name: string): string {
  return name === DEFAULT_DATA_SOURCE
    ? `TransactionalModule.${method}()`
    : `TransactionalModule.${method}({ dataSource: '${name}' })`;
}

/** `where()` for options not checked yet: a bad `dataSource` is reported by the check itself. */
export function whereOf(method: Method, options: unknown): string {
  const name = (options as { dataSource?: unknown } | null | undefined)?.dataSource;
  return where(method, typeof name === 'string' && name !== '' ? name : DEFAULT_DATA_SOURCE);
}

/** The module `forRoot()` / `forRootAsync()` return, with the registration of its data source. */
export function withRegistration(
  definition: DynamicModule,
  method: Method,
  extras: TransactionalModuleExtras,
  resolved?: ResolvedModuleOptions,
): DynamicModule {
  // unknown, not string: a caller in JavaScript can pass null, which is reported below, not defaulted.
  const given: unknown = extras.dataSource;
  const name = given === undefined ? DEFAULT_DATA_SOURCE : given;
  if (typeof name !== 'string' || name === '') {
    throw new TransactionalOptionsError(
      `${where(method, DEFAULT_DATA_SOURCE)}: dataSource must be the name of a TypeORM data source, a non-empty string; got ${describe(name)}.`,
    );
  }
  return {
    ...definition,
    global: true,
    imports: [
      ...(definition.imports ?? []),
      TransactionalCoreModule,
      ...(extras.mount === false ? [] : [TransactionInterceptorMount]),
    ],
    providers: [
      ...(definition.providers ?? []),
      {
        provide: `nestjs-request-transaction:registration:${name}`,
        useFactory: (
          options: unknown,
          registry: DataSourceRegistry,
          named: DataSource | undefined,
          fallback: DataSource | undefined,
        ) =>
          register(
            where(method, name),
            name,
            resolved ?? resolveFactoryOptions(options, where(method, name)),
            registry,
            named,
            fallback,
          ),
        inject: [
          MODULE_OPTIONS_TOKEN,
          DataSourceRegistry,
          { token: getDataSourceToken(name), optional: true },
          { token: getDataSourceToken(), optional: true },
        ],
      },
    ],
  };
}

/** What the options factory of `forRootAsync()` returned, checked; `dataSource` there would be ignored. */
function resolveFactoryOptions(options: unknown, where: string): ResolvedModuleOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TransactionalOptionsError(
      `${where}: the options factory returned ${describe(options)}; it must return an options object ({} for all ` +
        `the defaults). An arrow function with a block body returns nothing: write () => ({ … }).`,
    );
  }
  const dataSource = (options as TransactionalModuleExtras).dataSource;
  if (dataSource !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: the options factory returned dataSource ${describe(dataSource)}, which would be ignored: the data ` +
        `source is chosen before the factory runs. Give it beside the factory: ` +
        `TransactionalModule.forRootAsync({ dataSource: ${describe(dataSource)}, useFactory, inject }).`,
    );
  }
  if ((options as TransactionalModuleExtras).mount !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: the options factory returned mount, which is read before any factory runs (it decides whether ` +
        `the interceptor is bound). Give it beside useFactory: forRootAsync({ mount: false, useFactory }).`,
    );
  }
  return resolveModuleOptions(options, where);
}

function register(
  where: string,
  name: string,
  resolved: ResolvedModuleOptions,
  registry: DataSourceRegistry,
  dataSource: DataSource | undefined,
  anyDataSource: DataSource | undefined,
): string {
  if (dataSource === undefined) {
    throw new TransactionalOptionsError(
      anyDataSource === undefined && name === DEFAULT_DATA_SOURCE
        ? `${where} found no TypeORM data source. Import TypeOrmModule.forRoot({ … }) (or forRootAsync) in the ` +
            `application as well: TransactionalModule manages the transactions of a data source it creates.`
        : `${where}: no TypeORM data source named '${name}'. Register it with TypeOrmModule.forRoot({ name: '${name}', … }) ` +
            `or fix the name.`,
    );
  }
  const dialect = dialectOf(dataSource);
  if (dialect === undefined) {
    throw new TransactionalOptionsError(
      `${where}: data source '${name}' is of type '${dataSource.options.type}'. TransactionalModule supports ` +
        `'postgres', 'mysql' and 'mariadb'.`,
    );
  }
  checkCompatibility(dataSource, where);
  checkSingleConnectionPool(dataSource, name, dialect.poolStats(dataSource).max, where);
  const entry = { name, dataSource, dialect, options: resolved, counters: new DataSourceCounters() };
  registry.register(entry);
  installConnectionGuard(entry, registry);
  return name;
}
