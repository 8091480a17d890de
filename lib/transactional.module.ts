import { type DynamicModule, Global, Module, type Provider } from '@nestjs/common';
import { APP_INTERCEPTOR, DiscoveryModule } from '@nestjs/core';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
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
import {
  checkDataSourceName,
  checkEntity,
  createTxRepository,
  type EntityClassOrSchema,
  getTxRepositoryToken,
} from './repository/tx-repository';
import {
  ASYNC_OPTIONS_TYPE,
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN,
  OPTIONS_TYPE,
} from './transactional.module-definition';
import {
  checkedModuleOptions,
  MODULE_OPTION_KEYS,
  type ResolvedModuleOptions,
  resolveModuleOptions,
  type TransactionalModuleExtras,
  validateExtras,
} from './transactional.options';

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
  static override forRoot(options?: typeof OPTIONS_TYPE): DynamicModule {
    // Bad static options fail here, before TypeORM opens any connection; the checked copy is what counts.
    const where = whereOf('forRoot', options);
    const checked = checkedModuleOptions(options, where);
    const resolved = resolveModuleOptions(checked, where);
    return withRegistration(super.forRoot(checked), 'forRoot', checked, resolved);
  }

  /**
   * `forRoot()` with options from a factory. `dataSource` and `mount` are given here, beside the factory: they
   * are read before the factory runs, so a factory that returns one fails at bootstrap, as does one that
   * returns anything but an options object.
   * @example
   * TransactionalModule.forRootAsync({ inject: [ConfigService], useFactory: (c: ConfigService) => ({ guard: c.get('GUARD') }) })
   */
  static override forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    checkAsyncOptions(options, whereOf('forRootAsync', options));
    validateExtras(options, whereOf('forRootAsync', options));
    return withRegistration(super.forRootAsync(options), 'forRootAsync', options);
  }

  /**
   * Providers for `@InjectTxRepository(Entity)`, one per entity. The entities are also registered with
   * `TypeOrmModule.forFeature()`, so TypeORM's `autoLoadEntities` loads them.
   * @example
   * TransactionalModule.forFeature([Account, Transfer])
   */
  static forFeature(entities: EntityClassOrSchema[], dataSource: string = DEFAULT_DATA_SOURCE): DynamicModule {
    if (!Array.isArray(entities)) {
      throw new TransactionalOptionsError(
        `TransactionalModule.forFeature() takes an array of entities, got ${describe(entities)}.`,
      );
    }
    checkDataSourceName(dataSource, 'TransactionalModule.forFeature()');
    entities.forEach((entity, index) => checkEntity(entity, `TransactionalModule.forFeature(): the entity at index ${index}`));
    const providers: Provider[] = entities.map((entity) => ({
      provide: getTxRepositoryToken(entity, dataSource),
      useFactory: (source: DataSource) => createTxRepository(entity, dataSource, source),
      inject: [getDataSourceToken(dataSource)],
    }));
    return { module: TransactionalModule, imports: [TypeOrmModule.forFeature(entities, dataSource)], providers, exports: providers };
  }
}

type Method = 'forRoot' | 'forRootAsync';

function where(method: Method, name: string): string {
  return name === DEFAULT_DATA_SOURCE ? `TransactionalModule.${method}()` : `TransactionalModule.${method}({ dataSource: '${name}' })`;
}

/** `where()` for options not checked yet: a bad `dataSource` is reported by the check itself. */
function whereOf(method: Method, options: unknown): string {
  const name = (options as { dataSource?: unknown } | null | undefined)?.dataSource;
  return where(method, typeof name === 'string' && name !== '' ? name : DEFAULT_DATA_SOURCE);
}

/** Keys of `forRootAsync()`'s argument: Nest's own, and the extras read before the factory runs. */
const ASYNC_KEYS = ['useFactory', 'useClass', 'useExisting', 'inject', 'imports', 'provideInjectionTokensFrom', 'dataSource', 'mount'];

/** `forRootAsync()`'s argument: Nest would read a module option beside the factory as an extra and drop it. */
function checkAsyncOptions(options: unknown, where: string): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TransactionalOptionsError(
      `${where} takes { useFactory, inject?, imports?, dataSource? } (or useClass / useExisting), got ${describe(options)}. ` +
        `For options known up front, use TransactionalModule.forRoot().`,
    );
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (ASYNC_KEYS.includes(key)) continue;
    throw new TransactionalOptionsError(
      MODULE_OPTION_KEYS.includes(key)
        ? `${where}: ${key} is given beside the factory, where it would be ignored. Return it from the factory: ` +
            `useFactory: () => ({ ${key}: … }).`
        : `${where}: unknown option '${key}'. Known: ${ASYNC_KEYS.join(', ')}.`,
    );
  }
  const sources = ['useFactory', 'useClass', 'useExisting'].filter((key) => o[key] !== undefined);
  if (sources.length !== 1) {
    throw new TransactionalOptionsError(
      `${where} needs exactly one of useFactory, useClass, useExisting to make its options, got ` +
        `${sources.length === 0 ? 'none' : sources.join(' and ')}.`,
    );
  }
  if (o.useFactory !== undefined && typeof o.useFactory !== 'function') {
    throw new TransactionalOptionsError(`${where}: useFactory must be a function returning the options, got ${describe(o.useFactory)}.`);
  }
}

function withRegistration(
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
        ) => register(where(method, name), name, resolved ?? resolveFactoryOptions(options, where(method, name)), registry, named, fallback),
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
