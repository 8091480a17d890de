import { Registry } from 'prom-client';
import { DurationWindow, WINDOW_SIZE } from '../../lib/core/stats';
import { TransactionalOptionsError } from '../../lib/errors';
import type { TransactionHost } from '../../lib/core/transaction-runner';

describe('DurationWindow', () => {
  it('summarises nothing as zeros', () => {
    expect(new DurationWindow().summary()).toEqual({ count: 0, p50: 0, p99: 0, max: 0 });
  });

  it('gives nearest-rank p50 and p99 and the max of what it holds', () => {
    const window = new DurationWindow();
    for (let ms = 100; ms >= 1; ms--) window.record(ms);
    expect(window.summary()).toEqual({ count: 100, p50: 50, p99: 99, max: 100 });
  });

  it('keeps only the latest WINDOW_SIZE durations, and counts them all', () => {
    const window = new DurationWindow();
    for (let i = 0; i < WINDOW_SIZE; i++) window.record(1000);
    for (let i = 0; i < WINDOW_SIZE; i++) window.record(1);
    expect(window.summary()).toEqual({ count: 2 * WINDOW_SIZE, p50: 1, p99: 1, max: 1 });
  });
});

describe('registerTransactionMetrics()', () => {
  const host = { stats: () => ({}) } as unknown as TransactionHost;

  it('rejects a prefix Prometheus would not accept', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { registerTransactionMetrics } = require('../../lib/prometheus') as typeof import('../../lib/prometheus');
    expect(() => registerTransactionMetrics(host, { registry: new Registry(), prefix: 'my-app.' })).toThrow(
      new TransactionalOptionsError(
        "registerTransactionMetrics(): prefix 'my-app.' is not a valid start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).",
      ),
    );
  });

  it('says to install prom-client when it is missing', () => {
    jest.isolateModules(() => {
      jest.doMock('prom-client', () => {
        throw new Error("Cannot find module 'prom-client'");
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { registerTransactionMetrics } = require('../../lib/prometheus') as typeof import('../../lib/prometheus');
      expect(() => registerTransactionMetrics(host)).toThrow(
        /^registerTransactionMetrics\(\) needs the package prom-client, which could not be loaded \(Cannot find module 'prom-client'\)\. Install it: npm install prom-client\.$/,
      );
    });
  });
});
