import { type DynamicModule, Module, type Provider } from '@nestjs/common';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { DEFAULT_DATA_SOURCE } from './core/data-source-registry';
import { whereOf, withRegistration } from './data-source-registration';
import { describeValue as describe, TransactionalOptionsError } from './errors';
import {
  checkDataSourceName,
  checkEntity,
  createTxRepository,
  type EntityClassOrSchema,
  getTxRepositoryToken,
} from './repository/tx-repository';
import { ASYNC_OPTIONS_TYPE, ConfigurableModuleClass, OPTIONS_TYPE } from './transactional.module-definition';
import { checkedModuleOptions, MODULE_OPTION_KEYS, resolveModuleOptions, validateExtras } from './options-check';

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
    return {
      module: TransactionalModule,
      imports: [TypeOrmModule.forFeature(entities, dataSource)],
      providers,
      exports: providers,
    };
  }
}

/** Keys of `forRootAsync()`'s argument: Nest's own, and the extras read before the factory runs. */
const ASYNC_KEYS = [
  'useFactory',
  'useClass',
  'useExisting',
  'inject',
  'imports',
  'provideInjectionTokensFrom',
  'dataSource',
  'mount',
];

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
    throw new TransactionalOptionsError(
      `${where}: useFactory must be a function returning the options, got ${describe(o.useFactory)}.`,
    );
  }
}
