import 'reflect-metadata';
import { Transactional, TRANSACTIONAL_OPTIONS } from '../../lib/decorators/transactional.decorator';
import { TransactionalOptionsError } from '../../lib/errors';
import { checkedModuleOptions, checkedTransactionOptions, resolveModuleOptions } from '../../lib/options-check';

describe('module options', () => {
  const env = process.env.NODE_ENV;
  afterEach(() => {
    process.env.NODE_ENV = env;
  });

  it('defaults the guard to throw outside production and to warn in production', () => {
    process.env.NODE_ENV = 'test';
    expect(resolveModuleOptions({}, 'forRoot()').guard).toBe('throw');
    process.env.NODE_ENV = 'production';
    expect(resolveModuleOptions({}, 'forRoot()').guard).toBe('warn');
  });

  it('reports idle in transaction after 200 ms outside production, and not in production unless asked', () => {
    process.env.NODE_ENV = 'test';
    expect(resolveModuleOptions({}, 'forRoot()').idleInTransactionMs).toBe(200);
    process.env.NODE_ENV = 'production';
    expect(resolveModuleOptions({}, 'forRoot()').idleInTransactionMs).toBeUndefined();
    expect(resolveModuleOptions({ idleInTransactionMs: 500 }, 'forRoot()').idleInTransactionMs).toBe(500);
  });

  it.each([0, false] as const)('turns the idle-in-transaction report off with idleInTransactionMs: %j', (off) => {
    process.env.NODE_ENV = 'test';
    expect(resolveModuleOptions({ idleInTransactionMs: off }, 'forRoot()').idleInTransactionMs).toBeUndefined();
  });

  it('keeps explicit values, false and zero-like ones included', () => {
    expect(
      resolveModuleOptions(
        {
          guard: 'off',
          readOnly: false,
          isolationLevel: 'SERIALIZABLE',
          timeoutMs: 1,
          slowTransactionMs: 2,
          idleInTransactionMs: 4,
          logStatsIntervalMs: 3,
        },
        'x',
      ),
    ).toEqual({
      guard: 'off',
      readOnly: false,
      isolationLevel: 'SERIALIZABLE',
      timeoutMs: 1,
      slowTransactionMs: 2,
      idleInTransactionMs: 4,
      logStatsIntervalMs: 3,
    });
  });

  it.each([
    [{ guard: 'loud' }, "forRoot(): guard 'loud' is not one of 'throw', 'warn', 'off'."],
    [
      { isolationLevel: 'SNAPSHOT' },
      "forRoot(): isolationLevel 'SNAPSHOT' is not one of 'READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'.",
    ],
    [{ timeoutMs: 0 }, 'forRoot(): timeoutMs must be a whole number of milliseconds above 0, got 0.'],
    [{ timeoutMs: 1.5 }, 'forRoot(): timeoutMs must be a whole number of milliseconds above 0, got 1.5.'],
    [{ slowTransactionMs: -5 }, 'forRoot(): slowTransactionMs must be a whole number of milliseconds above 0, got -5.'],
    [{ logStatsIntervalMs: '1000' }, "forRoot(): logStatsIntervalMs must be a whole number of milliseconds above 0, got '1000'."],
    [{ readOnly: 'yes' }, "forRoot(): readOnly must be true or false, got 'yes'."],
    [
      { isolation: 'SERIALIZABLE' },
      "forRoot(): unknown option 'isolation'. Known options: isolationLevel, readOnly, timeoutMs, guard, slowTransactionMs, idleInTransactionMs, logStatsIntervalMs, dataSource, mount.",
    ],
    [
      { idleInTransactionMs: -1 },
      'forRoot(): idleInTransactionMs must be a whole number of milliseconds, or 0 or false to turn the report off; got -1.',
    ],
    [
      { idleInTransactionMs: 2.5 },
      'forRoot(): idleInTransactionMs must be a whole number of milliseconds, or 0 or false to turn the report off; got 2.5.',
    ],
    [
      { idleInTransactionMs: true },
      'forRoot(): idleInTransactionMs must be a whole number of milliseconds, or 0 or false to turn the report off; got true.',
    ],
    [
      { idleInTransactionMs: 2 ** 31 },
      'forRoot(): idleInTransactionMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): no gap between two ' +
        'statements of a transaction would ever be reported. Use at most 2147483647, or false to turn the report off.',
    ],
    [{ mount: 'no' }, "forRoot(): mount must be true or false, got 'no'."],
  ])('rejects %j with a message naming the option', (options, message) => {
    expect(() => resolveModuleOptions(options as never, 'forRoot()')).toThrow(new TransactionalOptionsError(message));
  });
});

describe('@Transactional()', () => {
  it('rejects bad options where the class is declared', () => {
    expect(() => Transactional({ isolationLevel: 'serializable' as never })).toThrow(TransactionalOptionsError);
    expect(() => Transactional({ isolationLevel: 'serializable' as never })).toThrow(
      /@Transactional\(\): isolationLevel 'serializable'/,
    );
  });

  it('takes slowTransactionMs and idleInTransactionMs per route, but not the module-wide logStatsIntervalMs', () => {
    expect(() => Transactional({ slowTransactionMs: 500 })).not.toThrow();
    expect(() => Transactional({ idleInTransactionMs: false })).not.toThrow();
    expect(() => Transactional({ idleInTransactionMs: 'off' as never })).toThrow(
      /^@Transactional\(\): idleInTransactionMs must be a whole number/,
    );
    expect(() => Transactional({ logStatsIntervalMs: 500 } as never)).toThrow(
      "@Transactional(): unknown option 'logStatsIntervalMs'. Known options: isolationLevel, readOnly, timeoutMs, guard, slowTransactionMs, idleInTransactionMs, retry, propagation, dataSource.",
    );
  });
});

describe('checkedTransactionOptions()', () => {
  const MAX = 2_147_483_647;

  it('returns a frozen copy, never the object it was given, with a frozen copy of retry', () => {
    const given = { timeoutMs: 1000, retry: { attempts: 2 } };

    const checked = checkedTransactionOptions(given, 'x');

    expect(checked).toEqual(given);
    expect(checked).not.toBe(given);
    expect(Object.isFrozen(checked)).toBe(true);
    expect(checked.retry).not.toBe(given.retry);
    expect(Object.isFrozen(checked.retry)).toBe(true);
    expect(Object.isFrozen(given)).toBe(false);
  });

  it('keeps the values it checked when the given object changes afterwards', () => {
    const given: Record<string, unknown> = { timeoutMs: 1000, isolationLevel: 'SERIALIZABLE', retry: { attempts: 2 } };
    const checked = checkedTransactionOptions(given, 'x');

    given.timeoutMs = '1; DROP TABLE accounts';
    given.isolationLevel = 'SERIALIZABLE; DROP TABLE accounts';
    (given.retry as Record<string, unknown>).attempts = 'many';

    expect(checked).toEqual({ timeoutMs: 1000, isolationLevel: 'SERIALIZABLE', retry: { attempts: 2 } });
  });

  it('reads each option once: a getter cannot give the checked value, then another', () => {
    let reads = 0;
    const given = {
      get timeoutMs(): unknown {
        reads += 1;
        return reads === 1 ? 1000 : '1; DROP TABLE accounts';
      },
    };

    const checked = checkedTransactionOptions(given, 'x');

    expect(checked.timeoutMs).toBe(1000);
    expect(checked.timeoutMs).toBe(1000);
    expect(reads).toBe(1);
  });

  it('leaves keys set to undefined out, and gives a frozen empty object for no options', () => {
    expect(Object.keys(checkedTransactionOptions({ timeoutMs: undefined, readOnly: true }, 'x'))).toEqual(['readOnly']);
    const none = checkedTransactionOptions(undefined, 'x');
    expect(none).toEqual({});
    expect(Object.isFrozen(none)).toBe(true);
  });

  it.each([
    ['a string timeoutMs', { timeoutMs: '1000' }, "x: timeoutMs must be a whole number of milliseconds above 0, got '1000'."],
    [
      'SQL in timeoutMs',
      { timeoutMs: '0; DROP TABLE accounts' },
      "x: timeoutMs must be a whole number of milliseconds above 0, got '0; DROP TABLE accounts'.",
    ],
    ['NaN', { timeoutMs: Number.NaN }, 'x: timeoutMs must be a whole number of milliseconds above 0, got NaN.'],
    [
      '2^31 ms of timeoutMs',
      { timeoutMs: 2 ** 31 },
      "x: timeoutMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): PostgreSQL's statement_timeout takes no more, " +
        'so every transaction would fail. Use at most 2147483647, or leave timeoutMs out for no timeout.',
    ],
    [
      '2^31 ms of slowTransactionMs',
      { slowTransactionMs: 2 ** 31 },
      'x: slowTransactionMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): Node.js fires a longer timer after 1 ms, ' +
        'so every transaction would be reported slow. Use at most 2147483647, or leave slowTransactionMs out for no warning.',
    ],
    ['an unsafe timeoutMs', { timeoutMs: 1e20 }, /^x: timeoutMs 100000000000000000000 is above the limit of 2147483647 ms/],
    ['a null retry', { retry: null }, 'x: retry must be true, false or { attempts, baseDelayMs, maxDelayMs }, got null.'],
    ['a string retry', { retry: 'yes' }, "x: retry must be true, false or { attempts, baseDelayMs, maxDelayMs }, got 'yes'."],
    ['retry.attempts 1.5', { retry: { attempts: 1.5 } }, 'x: retry.attempts must be a whole number of at least 1, got 1.5.'],
    ['retry.attempts 0', { retry: { attempts: 0 } }, 'x: retry.attempts must be a whole number of at least 1, got 0.'],
    [
      'a NaN retry delay',
      { retry: { baseDelayMs: Number.NaN } },
      'x: retry.baseDelayMs must be a number of milliseconds of at least 0, got NaN.',
    ],
    [
      'an infinite retry delay',
      { retry: { maxDelayMs: Infinity } },
      'x: retry.maxDelayMs must be a number of milliseconds of at least 0, got Infinity.',
    ],
    [
      'a negative retry delay',
      { retry: { baseDelayMs: -1 } },
      'x: retry.baseDelayMs must be a number of milliseconds of at least 0, got -1.',
    ],
    [
      'a string retry delay',
      { retry: { baseDelayMs: '5' } },
      "x: retry.baseDelayMs must be a number of milliseconds of at least 0, got '5'.",
    ],
    [
      'a retry delay of 2^31 ms',
      { retry: { maxDelayMs: 2 ** 31 } },
      'x: retry.maxDelayMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): Node.js ends a longer wait after 1 ms. Use at most 2147483647.',
    ],
    [
      'an unknown retry key',
      { retry: { tries: 3 } },
      "x: unknown retry option 'tries'. Known: attempts, baseDelayMs, maxDelayMs.",
    ],
    ['null', null, 'x: options must be an object, got null. Leave them out for the defaults.'],
    ['a number', 5, 'x: options must be an object, got 5. Leave them out for the defaults.'],
    ['an array', [], 'x: options must be an object, got an array of 0. Leave them out for the defaults.'],
  ])('rejects %s, naming the option and the value', (_what, options, message) => {
    const attempt = () => checkedTransactionOptions(options, 'x');
    expect(attempt).toThrow(TransactionalOptionsError);
    expect(attempt).toThrow(message instanceof RegExp ? message : new TransactionalOptionsError(message));
  });

  it('takes the largest duration the database and Node.js timers accept, and 0 ms retry delays', () => {
    expect(
      checkedTransactionOptions({ timeoutMs: MAX, slowTransactionMs: MAX, retry: { baseDelayMs: 0, maxDelayMs: MAX } }, 'x'),
    ).toEqual({ timeoutMs: MAX, slowTransactionMs: MAX, retry: { baseDelayMs: 0, maxDelayMs: MAX } });
    expect(resolveModuleOptions({ logStatsIntervalMs: MAX }, 'x').logStatsIntervalMs).toBe(MAX);
    expect(() => resolveModuleOptions({ logStatsIntervalMs: MAX + 1 }, 'x')).toThrow(
      'x: logStatsIntervalMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): Node.js runs a longer interval every ' +
        'millisecond. Use at most 2147483647, or leave logStatsIntervalMs out for no stats lines.',
    );
  });

  describe("with TransactionRunner.run()'s extra keys", () => {
    const run = (options: unknown) => () =>
      checkedTransactionOptions(options, 'TransactionRunner.run()', ['name', 'dataSource', 'propagation']);

    it.each([
      [{ name: 42 }, 'TransactionRunner.run(): name must be a label for errors and warnings, a non-empty string; got 42.'],
      [{ name: '' }, "TransactionRunner.run(): name must be a label for errors and warnings, a non-empty string; got ''."],
      [
        { dataSource: {} },
        'TransactionRunner.run(): dataSource must be the name of a TypeORM data source, a non-empty string; got an object.',
      ],
      [{ propagation: 'sideways' }, "TransactionRunner.run(): propagation 'sideways' is not one of 'required', 'nested'."],
    ])('rejects %j', (options, message) => {
      expect(run(options)).toThrow(new TransactionalOptionsError(message));
    });

    it('accepts and copies good ones', () => {
      const given = { name: 'job', dataSource: 'reports', propagation: 'nested', timeoutMs: 5 };
      expect(run(given)()).toEqual(given);
    });

    it('does not take them where they are not listed', () => {
      expect(() => checkedTransactionOptions({ name: 'job' }, '@Transactional()')).toThrow(/unknown option 'name'/);
    });
  });
});

describe('module options are frozen copies', () => {
  it('resolves to a frozen object', () => {
    expect(Object.isFrozen(resolveModuleOptions({ guard: 'warn' }, 'x'))).toBe(true);
  });

  it('rejects options that are not an object, naming what it got', () => {
    expect(() => resolveModuleOptions(null, 'TransactionalModule.forRoot()')).toThrow(
      new TransactionalOptionsError(
        'TransactionalModule.forRoot(): options must be an object, got null. Leave them out for the defaults.',
      ),
    );
    expect(() => checkedModuleOptions('warn', 'TransactionalModule.forRoot()')).toThrow(
      new TransactionalOptionsError(
        "TransactionalModule.forRoot(): options must be an object, got 'warn'. Leave them out for the defaults.",
      ),
    );
  });

  it('checks dataSource', () => {
    expect(() => checkedModuleOptions({ dataSource: '' }, 'f')).toThrow(
      new TransactionalOptionsError("f: dataSource must be the name of a TypeORM data source, a non-empty string; got ''."),
    );
    expect(checkedModuleOptions({ dataSource: 'reports' }, 'f')).toEqual({ dataSource: 'reports' });
  });
});

describe('@Transactional() metadata', () => {
  it('is a frozen copy taken at the declaration: changing the options object afterwards changes nothing', () => {
    const options = { timeoutMs: 1000, retry: { attempts: 2 } };
    class Declared {
      @Transactional(options)
      handle(): void {}
    }

    options.timeoutMs = '1; DROP TABLE accounts' as never;
    options.retry.attempts = 99;

    const stored = Reflect.getMetadata(TRANSACTIONAL_OPTIONS, Declared.prototype.handle) as Record<string, unknown>;
    expect(stored).toEqual({ timeoutMs: 1000, retry: { attempts: 2 } });
    expect(Object.isFrozen(stored)).toBe(true);
    expect(Object.isFrozen(stored.retry)).toBe(true);
  });

  it('rejects null options, but takes none', () => {
    expect(() => Transactional(null as never)).toThrow(
      new TransactionalOptionsError('@Transactional(): options must be an object, got null. Leave them out for the defaults.'),
    );
    expect(() => Transactional()).not.toThrow();
  });
});
