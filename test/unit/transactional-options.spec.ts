import { Transactional } from '../../lib/decorators/transactional.decorator';
import { TransactionalOptionsError } from '../../lib/errors';
import { resolveModuleOptions } from '../../lib/transactional.options';

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

  it('keeps explicit values, false and zero-like ones included', () => {
    expect(
      resolveModuleOptions(
        { guard: 'off', readOnly: false, isolationLevel: 'SERIALIZABLE', timeoutMs: 1, slowTransactionMs: 2, logStatsIntervalMs: 3 },
        'x',
      ),
    ).toEqual({
      guard: 'off',
      readOnly: false,
      isolationLevel: 'SERIALIZABLE',
      timeoutMs: 1,
      slowTransactionMs: 2,
      logStatsIntervalMs: 3,
    });
  });

  it.each([
    [{ guard: 'loud' }, "forRoot(): guard 'loud' is not one of 'throw', 'warn', 'off'."],
    [{ isolationLevel: 'SNAPSHOT' }, "forRoot(): isolationLevel 'SNAPSHOT' is not one of 'READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'."],
    [{ timeoutMs: 0 }, 'forRoot(): timeoutMs must be a whole number of milliseconds above 0, got 0.'],
    [{ timeoutMs: 1.5 }, 'forRoot(): timeoutMs must be a whole number of milliseconds above 0, got 1.5.'],
    [{ slowTransactionMs: -5 }, 'forRoot(): slowTransactionMs must be a whole number of milliseconds above 0, got -5.'],
    [{ logStatsIntervalMs: '1000' }, "forRoot(): logStatsIntervalMs must be a whole number of milliseconds above 0, got '1000'."],
    [{ readOnly: 'yes' }, "forRoot(): readOnly must be true or false, got 'yes'."],
    [
      { isolation: 'SERIALIZABLE' },
      "forRoot(): unknown option 'isolation'. Known options: isolationLevel, readOnly, timeoutMs, guard, slowTransactionMs, logStatsIntervalMs, dataSource, mount.",
    ],
    [{ mount: 'no' }, "forRoot(): mount must be true or false, got 'no'."],
  ])('rejects %j with a message naming the option', (options, message) => {
    expect(() => resolveModuleOptions(options as never, 'forRoot()')).toThrow(new TransactionalOptionsError(message));
  });
});

describe('@Transactional()', () => {
  it('rejects bad options where the class is declared', () => {
    expect(() => Transactional({ isolationLevel: 'serializable' as never })).toThrow(TransactionalOptionsError);
    expect(() => Transactional({ isolationLevel: 'serializable' as never })).toThrow(/@Transactional\(\): isolationLevel 'serializable'/);
  });

  it('takes slowTransactionMs per route, but not the module-wide logStatsIntervalMs', () => {
    expect(() => Transactional({ slowTransactionMs: 500 })).not.toThrow();
    expect(() => Transactional({ logStatsIntervalMs: 500 } as never)).toThrow(
      "@Transactional(): unknown option 'logStatsIntervalMs'. Known options: isolationLevel, readOnly, timeoutMs, guard, slowTransactionMs, retry.",
    );
  });
});
