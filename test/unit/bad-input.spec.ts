import 'reflect-metadata';
import { EntitySchema } from 'typeorm';
import {
  InjectTxRepository,
  lockInOrder,
  TransactionalError,
  TransactionalModule,
  TransactionalOptionsError,
  Tx,
} from '../../lib';
import { Account } from '../support/entities';
import { databaseError, fakeApp } from '../support/fake-data-source';

const ItemSchema = new EntitySchema<{ id: number }>({
  name: 'BadInputSchemaItem',
  columns: { id: { type: Number, primary: true } },
});

/** What `attempt` threw. */
function thrownBy(attempt: () => unknown): unknown {
  try {
    attempt();
  } catch (error) {
    return error;
  }
  throw new Error('it did not throw');
}

function expectOptionsError(attempt: () => unknown, message: string | RegExp): void {
  const error = thrownBy(attempt);
  expect(error).toBeInstanceOf(TransactionalOptionsError);
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
}

describe('TransactionalModule.forRoot() given options that are not an object', () => {
  it.each([
    [null, 'null'],
    [5, '5'],
    ['warn', "'warn'"],
    [[], 'an array of 0'],
    [true, 'true'],
  ])('rejects %j with TransactionalOptionsError, not a TypeError', (options, shown) => {
    expectOptionsError(
      () => TransactionalModule.forRoot(options as never),
      `TransactionalModule.forRoot(): options must be an object, got ${shown}. Leave them out for the defaults.`,
    );
  });

  it('takes no argument at all: every default', () => {
    expect(() => TransactionalModule.forRoot()).not.toThrow();
    expect(() => TransactionalModule.forRoot(undefined)).not.toThrow();
  });

  it('names the data source of a bad option, and rejects a dataSource that is not a name', () => {
    expectOptionsError(
      () => TransactionalModule.forRoot({ dataSource: 'reports', timeoutMs: '5' as never }),
      "TransactionalModule.forRoot({ dataSource: 'reports' }): timeoutMs must be a whole number of milliseconds above 0, got '5'.",
    );
    expectOptionsError(
      () => TransactionalModule.forRoot({ dataSource: 42 as never }),
      'TransactionalModule.forRoot(): dataSource must be the name of a TypeORM data source, a non-empty string; got 42.',
    );
  });
});

describe('TransactionalModule.forRootAsync() given a bad argument', () => {
  const useFactory = () => ({});

  it.each([
    [null, 'null'],
    [undefined, 'undefined'],
    [() => ({}), 'a function'],
  ])('rejects %p, saying what it takes', (options, shown) => {
    expectOptionsError(
      () => TransactionalModule.forRootAsync(options as never),
      `TransactionalModule.forRootAsync() takes { useFactory, inject?, imports?, dataSource? } (or useClass / useExisting), ` +
        `got ${shown}. For options known up front, use TransactionalModule.forRoot().`,
    );
  });

  it('rejects a module option given beside the factory, where Nest would drop it', () => {
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ guard: 'warn', useFactory } as never),
      'TransactionalModule.forRootAsync(): guard is given beside the factory, where it would be ignored. Return it from the ' +
        'factory: useFactory: () => ({ guard: … }).',
    );
  });

  it('rejects an unknown key', () => {
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ useFactry: useFactory } as never),
      /^TransactionalModule\.forRootAsync\(\): unknown option 'useFactry'\. Known: useFactory, useClass, useExisting, inject, imports, provideInjectionTokensFrom, dataSource, mount\.$/,
    );
  });

  it('needs exactly one way to make its options', () => {
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ inject: [] }),
      'TransactionalModule.forRootAsync() needs exactly one of useFactory, useClass, useExisting to make its options, got none.',
    );
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ useFactory: { guard: 'warn' } as never }),
      'TransactionalModule.forRootAsync(): useFactory must be a function returning the options, got an object.',
    );
  });

  it('rejects a dataSource beside the factory that is not a name', () => {
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ dataSource: '', useFactory }),
      "TransactionalModule.forRootAsync(): dataSource must be the name of a TypeORM data source, a non-empty string; got ''.",
    );
    expectOptionsError(
      () => TransactionalModule.forRootAsync({ dataSource: null as never, useFactory }),
      'TransactionalModule.forRootAsync(): dataSource must be the name of a TypeORM data source, a non-empty string; got null.',
    );
  });

  it('takes a good one', () => {
    expect(() => TransactionalModule.forRootAsync({ dataSource: 'reports', useFactory })).not.toThrow();
  });
});

describe('TransactionalModule.forFeature() given bad entities or a bad data source', () => {
  it('rejects an undefined entity (an import cycle), naming its index', () => {
    expectOptionsError(
      () => TransactionalModule.forFeature([Account, undefined as never]),
      'TransactionalModule.forFeature(): the entity at index 1 is undefined, not an entity class or EntitySchema. An import ' +
        'cycle can leave a class undefined where it is read: check the imports of that file.',
    );
  });

  it.each([
    ['a string', 'Account', "'Account'"],
    ['null', null, 'null'],
  ])('rejects %s as an entity', (_what, entity, shown) => {
    expectOptionsError(
      () => TransactionalModule.forFeature([entity as never]),
      `TransactionalModule.forFeature(): the entity at index 0 is ${shown}, not an entity class or EntitySchema.`,
    );
  });

  it('rejects entities that are not an array', () => {
    expectOptionsError(
      () => TransactionalModule.forFeature(Account as never),
      'TransactionalModule.forFeature() takes an array of entities, got a function (Account).',
    );
  });

  it('rejects a data source that is not a name', () => {
    expectOptionsError(
      () => TransactionalModule.forFeature([Account], null as never),
      'TransactionalModule.forFeature(): the data source must be given by its name, a non-empty string (as in ' +
        'TypeOrmModule.forRoot({ name })), got null. Leave it out for the default data source.',
    );
  });

  it('takes entity classes and schemas', () => {
    expect(TransactionalModule.forFeature([Account, ItemSchema], 'reports').providers).toHaveLength(2);
  });
});

describe('@InjectTxRepository() and @Tx() given bad arguments', () => {
  it('throw where the class is declared', () => {
    expectOptionsError(
      () => InjectTxRepository(undefined as never),
      /^@InjectTxRepository\(\): the entity is undefined, not an entity class/,
    );
    expectOptionsError(
      () => InjectTxRepository(Account, ''),
      /^@InjectTxRepository\(\): the data source must be given by its name, a non-empty string .*got ''\./,
    );
    expectOptionsError(() => Tx(7 as never), /^@Tx\(\): the data source must be given by its name, a non-empty string .*got 7\./);
    expect(() => Tx()).not.toThrow();
    expect(() => Tx('reports')).not.toThrow();
    expect(() => InjectTxRepository(ItemSchema, 'reports')).not.toThrow();
  });
});

describe('lockInOrder() given something other than an EntityManager', () => {
  it.each([undefined, null, {}])('rejects %p before anything else', async (tx) => {
    const attempt = lockInOrder(tx as never, Account, [1]);
    await expect(attempt).rejects.toThrow(TransactionalError);
    await expect(attempt).rejects.toThrow(
      /^lockInOrder\(\) takes an EntityManager first, got (undefined|null|an object)\. Pass the manager from @Tx\(\)/,
    );
  });
});

describe('TransactionRunner.run() given bad input', () => {
  it('rejects work that is not a function, and sends nothing', async () => {
    const app = fakeApp();
    await expect(app.runner.run('SELECT 1' as never)).rejects.toThrow(
      /^TransactionRunner\.run\(\) takes the work as a function \(tx\) => …, got 'SELECT 1'\.$/,
    );
    expect(app.pool.statements()).toEqual([]);
  });

  it('reads its options once: changing them while the work runs changes nothing, a retry included', async () => {
    const app = fakeApp();
    let attempts = 0;
    app.pool.respond = (sql) => {
      if (sql === 'UPDATE' && ++attempts === 1) throw databaseError('deadlock detected', { code: '40P01' });
      return { command: 'OK', rows: [] };
    };
    const options = { timeoutMs: 1000, retry: { attempts: 2, baseDelayMs: 0 } };
    await app.runner.run(async (tx) => {
      options.timeoutMs = '1; DROP TABLE x' as never;
      options.retry.attempts = 1;
      await tx.query('UPDATE');
    }, options);
    const begin = 'BEGIN; SET LOCAL statement_timeout = 1000; SET LOCAL idle_in_transaction_session_timeout = 1000';
    expect(app.pool.statements()).toEqual([begin, 'UPDATE', 'ROLLBACK', begin, 'UPDATE', 'COMMIT']);
  });
});
