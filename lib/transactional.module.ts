import { type DynamicModule, Global, Module, type Provider } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { DataSourceRegistry, DEFAULT_DATA_SOURCE } from './core/data-source-registry';
import { dialectOf } from './core/dialect';
import { DataSourceCounters } from './core/stats';
import { TransactionHost, TransactionRunner } from './core/transaction-runner';
import { TransactionalOptionsError } from './errors';
import { installConnectionGuard } from './guard/connection-guard';
import { TransactionInterceptor } from './interceptor/transaction.interceptor';
import { createTxRepository, type EntityClassOrSchema, getTxRepositoryToken } from './repository/tx-repository';
import {
  ASYNC_OPTIONS_TYPE,
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN,
  OPTIONS_TYPE,
} from './transactional.module-definition';
import {
  resolveModuleOptions,
  type TransactionalModuleExtras,
  type TransactionalModuleOptions,
  validateExtras,
} from './transactional.options';

/** What every `forRoot()` shares within one application: one registry, one runner, one interceptor. */
@Global()
@Module({
  providers: [DataSourceRegistry, TransactionRunner, TransactionHost, TransactionInterceptor],
  exports: [DataSourceRegistry, TransactionRunner, TransactionHost, TransactionInterceptor],
})
export class TransactionalCoreModule {}

/**
 * Binds `TransactionInterceptor` globally. A static module: however many `forRoot()` calls import it,
 * Nest creates it, and so binds the interceptor, once.
 */
@Module({
  providers: [{ provide: APP_INTERCEPTOR, useExisting: TransactionInterceptor }],
})
export class TransactionInterceptorMount {}

/**
 * One HTTP request, one transaction, one pooled connection. `forRoot()` (or `forRootAsync()`) once
 * per TypeORM data source; `forFeature()` for `@InjectTxRepository()`.
 */
@Module({})
export class TransactionalModule extends ConfigurableModuleClass {
  /**
   * Registers the request transaction and the connection guard for one data source.
   * @example
   * TransactionalModule.forRoot({ isolationLevel: 'READ COMMITTED' })
   */
  static override forRoot(options: typeof OPTIONS_TYPE = {}): DynamicModule {
    // Bad static options fail here, before TypeORM opens any connection.
    resolveModuleOptions(options, where('forRoot', options.dataSource ?? DEFAULT_DATA_SOURCE));
    return withRegistration(super.forRoot(options), 'forRoot', options);
  }

  /**
   * `forRoot()` with options from a factory. `dataSource` and `mount` are given here, beside the factory.
   * @example
   * TransactionalModule.forRootAsync({ inject: [ConfigService], useFactory: (c: ConfigService) => ({ guard: c.get('GUARD') }) })
   */
  static override forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    validateExtras(options, where('forRootAsync', options.dataSource ?? DEFAULT_DATA_SOURCE));
    return withRegistration(super.forRootAsync(options), 'forRootAsync', options);
  }

  /**
   * Providers for `@InjectTxRepository(Entity)`, one per entity.
   * @example
   * TransactionalModule.forFeature([Account, Transfer])
   */
  static forFeature(entities: EntityClassOrSchema[], dataSource: string = DEFAULT_DATA_SOURCE): DynamicModule {
    if (!Array.isArray(entities)) {
      throw new TransactionalOptionsError(
        `TransactionalModule.forFeature() takes an array of entities, got ${typeof entities}.`,
      );
    }
    const providers: Provider[] = entities.map((entity) => ({
      provide: getTxRepositoryToken(entity, dataSource),
      useFactory: (source: DataSource) => createTxRepository(entity, dataSource, source),
      inject: [getDataSourceToken(dataSource)],
    }));
    return { module: TransactionalModule, providers, exports: providers };
  }
}

type Method = 'forRoot' | 'forRootAsync';

function where(method: Method, name: string): string {
  return name === DEFAULT_DATA_SOURCE ? `TransactionalModule.${method}()` : `TransactionalModule.${method}({ dataSource: '${name}' })`;
}

function withRegistration(definition: DynamicModule, method: Method, extras: TransactionalModuleExtras): DynamicModule {
  const name = extras.dataSource ?? DEFAULT_DATA_SOURCE;
  if (typeof name !== 'string' || name === '') {
    throw new TransactionalOptionsError(`${where(method, String(name))}: dataSource must be the name of a TypeORM data source.`);
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
          options: TransactionalModuleOptions,
          registry: DataSourceRegistry,
          named: DataSource | undefined,
          fallback: DataSource | undefined,
        ) => register(where(method, name), name, options, registry, named, fallback),
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

function register(
  where: string,
  name: string,
  options: TransactionalModuleOptions,
  registry: DataSourceRegistry,
  dataSource: DataSource | undefined,
  anyDataSource: DataSource | undefined,
): string {
  if ((options as TransactionalModuleExtras | undefined)?.mount !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: the options factory returned mount, which is read before any factory runs (it decides whether ` +
        `the interceptor is bound). Give it beside useFactory: forRootAsync({ mount: false, useFactory }).`,
    );
  }
  const resolved = resolveModuleOptions(options ?? {}, where);
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
  const entry = { name, dataSource, dialect, options: resolved, counters: new DataSourceCounters() };
  registry.register(entry);
  installConnectionGuard(entry, registry);
  return name;
}
