import { Injectable, Module, type ModuleMetadata } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { Transactional, TransactionalError, TransactionalModule, TransactionalOptionsError, TransactionRunner } from '../../lib';
import { typeormOptions } from '../support/databases';
import { Item } from '../support/entities';
import { waitFor } from '../support/observer';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteObserver } from '../support/suite';

const applicationName = 'bootstrap-errors-e2e';
const ISOLATION_LEVELS = "'READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'";

/** Data sources the current test created: a failed bootstrap never closes them itself. */
const created: DataSource[] = [];

/** The PostgreSQL data source of these tests, created through a factory so the test can always destroy it. */
function typeorm(name?: string) {
  return TypeOrmModule.forRootAsync({
    name,
    useFactory: () => typeormOptions('postgres', { poolSize: 1, applicationName, entities: [Item], name }),
    dataSourceFactory: async (options) => {
      const dataSource = new DataSource(options as DataSourceOptions);
      created.push(dataSource);
      return dataSource.initialize();
    },
  });
}

/**
 * Declares, compiles and initialises an application context with the modules `imports()` returns,
 * then closes it. Bad options may fail at any of these steps (as early as the `forRoot()` call).
 */
async function bootstrap(imports: () => ModuleMetadata['imports']): Promise<void> {
  let moduleRef: TestingModule | undefined;
  try {
    moduleRef = await Test.createTestingModule({ imports: imports() }).setLogger(new RecordingNestLogger()).compile();
    await moduleRef.init();
  } finally {
    await moduleRef?.close();
  }
}

/** Expects `attempt` to fail with a TransactionalOptionsError carrying exactly `message`. */
async function expectOptionsError(attempt: Promise<unknown>, message: string | RegExp): Promise<void> {
  const error = await attempt.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(TransactionalOptionsError);
  expect(error).toBeInstanceOf(TransactionalError);
  expect((error as Error).name).toBe('TransactionalOptionsError');
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
}

/** The option names listed by an "unknown option" message. */
function knownOptionsIn(message: string): string[] {
  return (/Known options: (.+)\.$/.exec(message)?.[1] ?? '').split(', ');
}

@Injectable()
class BadOptions {
  readonly guard = 'loud';
}

@Module({ providers: [BadOptions], exports: [BadOptions] })
class BadOptionsModule {}

describe('bad options fail at bootstrap on postgres', () => {
  const db = suiteObserver('postgres');

  afterEach(async () => {
    await Promise.all(
      created
        .splice(0)
        .filter((dataSource) => dataSource.isInitialized)
        .map((dataSource) => dataSource.destroy()),
    );
    // Nothing of a failed bootstrap stays connected.
    await waitFor(async () => expect(await db.backends(applicationName)).toEqual([]));
  });

  it('boots with good options (the setup of the other tests is sound)', async () => {
    await expect(
      bootstrap(() => [
        typeorm(),
        TransactionalModule.forRoot({ guard: 'warn', isolationLevel: 'SERIALIZABLE', timeoutMs: 1000 }),
      ]),
    ).resolves.toBeUndefined();
  });

  describe('TransactionalModule.forRoot()', () => {
    it('rejects an unknown guard mode', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ guard: 'loud' as never })]),
        "TransactionalModule.forRoot(): guard 'loud' is not one of 'throw', 'warn', 'off'.",
      );
    });

    it('rejects an unknown isolation level', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ isolationLevel: 'SNAPSHOT' as never })]),
        `TransactionalModule.forRoot(): isolationLevel 'SNAPSHOT' is not one of ${ISOLATION_LEVELS}.`,
      );
    });

    it('rejects an unknown option key', async () => {
      const attempt = bootstrap(() => [typeorm(), TransactionalModule.forRoot({ isolation: 'SERIALIZABLE' } as never)]);

      await expectOptionsError(attempt, /^TransactionalModule\.forRoot\(\): unknown option 'isolation'\. Known options: .+\.$/);
      expect(
        knownOptionsIn(
          await attempt.then(
            () => '',
            (error: Error) => error.message,
          ),
        ),
      ).toEqual(expect.arrayContaining(['isolationLevel', 'readOnly', 'timeoutMs', 'guard', 'dataSource']));
    });

    it('rejects a timeout that is not a whole positive number of milliseconds', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ timeoutMs: 1.5 })]),
        'TransactionalModule.forRoot(): timeoutMs must be a whole number of milliseconds above 0, got 1.5.',
      );
    });

    it('names a data source that TypeORM does not have', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ dataSource: 'nope' })]),
        "TransactionalModule.forRoot({ dataSource: 'nope' }): no TypeORM data source named 'nope'. " +
          "Register it with TypeOrmModule.forRoot({ name: 'nope', … }) or fix the name.",
      );
    });

    it('says so when the application has no TypeORM data source at all', async () => {
      await expectOptionsError(
        bootstrap(() => [TransactionalModule.forRoot()]),
        'TransactionalModule.forRoot() found no TypeORM data source. Import TypeOrmModule.forRoot({ … }) (or forRootAsync) ' +
          'in the application as well: TransactionalModule manages the transactions of a data source it creates.',
      );
    });

    it('rejects a second registration of the same data source', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot(), TransactionalModule.forRoot({ guard: 'warn' })]),
        "TransactionalModule.forRoot() was called twice for data source 'default'. Call it once per data source.",
      );
    });
  });

  describe('TransactionalModule.forRootAsync()', () => {
    it('validates the options its factory returns, as forRoot() does', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ useFactory: () => ({ guard: 'loud' as never }) })]),
        /^TransactionalModule\.forRoot(Async)?\(\): guard 'loud' is not one of 'throw', 'warn', 'off'\.$/,
      );
    });

    it('validates options from an injected provider', async () => {
      await expectOptionsError(
        bootstrap(() => [
          typeorm(),
          TransactionalModule.forRootAsync({
            imports: [BadOptionsModule],
            inject: [BadOptions],
            useFactory: (bad: BadOptions) => ({ guard: bad.guard as never }),
          }),
        ]),
        /^TransactionalModule\.forRoot(Async)?\(\): guard 'loud' is not one of 'throw', 'warn', 'off'\.$/,
      );
    });

    it('rejects a mount that is not a boolean, given beside the factory', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ mount: 'no' as never, useFactory: () => ({}) })]),
        "TransactionalModule.forRootAsync(): mount must be true or false, got 'no'.",
      );
    });

    it('rejects mount returned by the factory: it is read before any factory runs', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ useFactory: () => ({ mount: false }) as never })]),
        /^TransactionalModule\.forRootAsync\(\): the options factory returned mount, .+ forRootAsync\(\{ mount: false, useFactory \}\)\.$/,
      );
    });

    it('names a missing data source given beside the factory', async () => {
      await expectOptionsError(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ dataSource: 'nope', useFactory: () => ({}) })]),
        /no TypeORM data source named 'nope'\. Register it with TypeOrmModule\.forRoot\(\{ name: 'nope', … \}\) or fix the name\.$/,
      );
    });
  });

  describe('@Transactional()', () => {
    it('throws when the class is declared, naming the bad option', () => {
      const declare = () => {
        class Declared {
          @Transactional({ timeoutMs: -1 })
          handle(): void {}
        }
        return Declared;
      };

      expect(declare).toThrow(TransactionalOptionsError);
      expect(declare).toThrow(
        new TransactionalOptionsError('@Transactional(): timeoutMs must be a whole number of milliseconds above 0, got -1.'),
      );
    });

    it('throws with TransactionalOptionsError for an unknown key on a class', () => {
      let thrown: unknown;
      try {
        @Transactional({ retries: 3 } as never)
        class Declared {}
        void Declared;
      } catch (error) {
        thrown = error;
      }

      expect(thrown).toBeInstanceOf(TransactionalOptionsError);
      expect((thrown as Error).message).toMatch(/^@Transactional\(\): unknown option 'retries'\. Known options: .+\.$/);
      const known = knownOptionsIn((thrown as Error).message);
      expect(known).toEqual(expect.arrayContaining(['isolationLevel', 'readOnly', 'timeoutMs', 'guard']));
      // On a method it relates to an open unit of work like run(); run()'s name comes from the method.
      expect(known).toEqual(expect.arrayContaining(['propagation', 'dataSource']));
      expect(known).not.toContain('name');
      expect(known).not.toContain('logStatsIntervalMs');
    });
  });

  describe('TransactionRunner.run()', () => {
    it('rejects bad options before running anything', async () => {
      let moduleRef: TestingModule | undefined;
      try {
        moduleRef = await Test.createTestingModule({ imports: [typeorm(), TransactionalModule.forRoot()] }).compile();
        await moduleRef.init();
        const runner = moduleRef.get(TransactionRunner);
        let ran = false;

        await expectOptionsError(
          runner.run(
            () => {
              ran = true;
            },
            { propagation: 'sideways' as never },
          ),
          "TransactionRunner.run(): propagation 'sideways' is not one of 'required', 'nested'.",
        );
        await expectOptionsError(
          runner.run(
            () => {
              ran = true;
            },
            { isolationLevel: 'CHAOS' as never },
          ),
          `TransactionRunner.run(): isolationLevel 'CHAOS' is not one of ${ISOLATION_LEVELS}.`,
        );
        expect(ran).toBe(false);
      } finally {
        await moduleRef?.close();
      }
    });
  });
});
