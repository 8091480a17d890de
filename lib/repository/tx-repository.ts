import { Inject } from '@nestjs/common';
import { getRepositoryToken } from '@nestjs/typeorm';
import type { DataSource, EntityTarget, ObjectLiteral, Repository } from 'typeorm';
import { DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { requireManager } from '../core/current-unit-of-work';
import { describeValue, TransactionalOptionsError } from '../errors';

/** An entity class (or schema) that `forFeature()` registers a transactional repository for. */
export type EntityClassOrSchema = Parameters<typeof getRepositoryToken>[0];

/** The injection token of the transactional repository of `entity`. */
export function getTxRepositoryToken(entity: EntityClassOrSchema, dataSource: string = DEFAULT_DATA_SOURCE): string {
  const token = getRepositoryToken(entity, dataSource);
  return `TxRepository:${typeof token === 'function' ? token.name : String(token)}`;
}

/**
 * Injects a `Repository<Entity>` whose every call runs in the current unit of work, on its one
 * connection. Outside one it throws `NoTransactionError`; after it settled, `TransactionFinishedError`.
 * The entity must be listed in `TransactionalModule.forFeature()`.
 * @example
 * constructor(@InjectTxRepository(Account) private readonly accounts: Repository<Account>) {}
 */
export function InjectTxRepository(entity: EntityClassOrSchema, dataSource?: string): ParameterDecorator & PropertyDecorator {
  checkEntity(entity, '@InjectTxRepository(): the entity');
  if (dataSource !== undefined) checkDataSourceName(dataSource, '@InjectTxRepository()');
  return Inject(getTxRepositoryToken(entity, dataSource));
}

/**
 * @internal Throws unless `entity` is an entity class or an `EntitySchema`: an import cycle can leave a
 * class `undefined` where a module or decorator reads it.
 */
export function checkEntity(entity: unknown, what: string): void {
  const schema = entity as { options?: { name?: unknown } } | null;
  if (typeof entity === 'function' || (typeof entity === 'object' && typeof schema?.options?.name === 'string')) return;
  throw new TransactionalOptionsError(
    `${what} is ${describeValue(entity)}, not an entity class or EntitySchema.` +
      (entity === undefined
        ? ' An import cycle can leave a class undefined where it is read: check the imports of that file.'
        : ''),
  );
}

/** @internal Throws unless `name` is a data source name, as `TypeOrmModule.forRoot({ name })` takes it. */
export function checkDataSourceName(name: unknown, where: string): void {
  if (typeof name === 'string' && name !== '') return;
  throw new TransactionalOptionsError(
    `${where}: the data source must be given by its name, a non-empty string (as in TypeOrmModule.forRoot({ name })), ` +
      `got ${describeValue(name)}. Leave it out for the default data source.`,
  );
}

/**
 * A stand-in for `dataSource.getRepository(entity)` that resolves, at each call, the repository of the
 * current unit of work's manager.
 */
export function createTxRepository<T extends ObjectLiteral>(
  entity: EntityTarget<T>,
  dataSourceName: string,
  dataSource: DataSource,
): Repository<T> {
  const plain = dataSource.getRepository(entity);
  const name = `Repository<${plain.metadata.name}>`;
  const current = (use: string) => requireManager(dataSourceName, use).getRepository(entity);
  const methods = new Map<PropertyKey, unknown>();
  // Repository methods that return no promise: their errors are thrown; the others reject.
  const synchronous = new Set<PropertyKey>(['create', 'merge', 'hasId', 'getId', 'createQueryBuilder', 'extend']);
  return new Proxy(plain, {
    get(target, property) {
      if (property === 'manager' || property === 'queryRunner') {
        return current(`${name}.${property}`)[property];
      }
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== 'function' || property === 'constructor') return value;
      let method = methods.get(property);
      if (method === undefined) {
        const use = `${name}.${String(property)}()`;
        const call = (...args: unknown[]) =>
          (current(use)[property as keyof Repository<T>] as (...a: unknown[]) => unknown)(...args);
        method = synchronous.has(property)
          ? call
          : (...args: unknown[]) => {
              try {
                return call(...args);
              } catch (error) {
                return Promise.reject(error);
              }
            };
        methods.set(property, method);
      }
      return method;
    },
  });
}
