import { redactUrl } from '../support/database-urls';
import { typeormOptions } from '../support/databases';
import { waitFor } from '../support/wait-for';

describe('test support', () => {
  describe('waitFor', () => {
    it('resolves with the first value that is not false', async () => {
      let attempts = 0;
      const value = await waitFor(() => (++attempts >= 3 ? `ready after ${attempts}` : false), { intervalMs: 5 });

      expect(value).toBe('ready after 3');
      expect(attempts).toBe(3);
    });

    it('keeps polling while the probe throws, so an expect inside can wait for a state', async () => {
      let attempts = 0;
      await waitFor(
        () => {
          attempts += 1;
          expect(attempts).toBeGreaterThanOrEqual(4);
        },
        { intervalMs: 5 },
      );

      expect(attempts).toBe(4);
    });

    it('rejects at the deadline with why the last attempt failed', async () => {
      const started = Date.now();
      const waiting = waitFor(
        () => {
          throw new Error('still 2 connections');
        },
        { timeoutMs: 150, intervalMs: 10 },
      );

      await expect(waiting).rejects.toThrow(/gave up after 150 ms .*the last attempt threw: still 2 connections/);
      const elapsed = Date.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(150);
      expect(elapsed).toBeLessThan(1000);
    });

    it('says when the condition stayed false', async () => {
      await expect(waitFor(() => false, { timeoutMs: 50, intervalMs: 10 })).rejects.toThrow(
        /the last attempt returned false/,
      );
    });

    it('stops waiting for a probe that never settles at the deadline', async () => {
      const started = Date.now();
      const waiting = waitFor(() => new Promise<never>(() => undefined), { timeoutMs: 100 });

      await expect(waiting).rejects.toThrow(/no attempt finished in time/);
      expect(Date.now() - started).toBeLessThan(1000);
    });
  });

  describe('redactUrl', () => {
    it('hides the password and keeps the rest', () => {
      expect(redactUrl('postgres://postgres:s3cret@127.0.0.1:54329/test')).toBe(
        'postgres://postgres:***@127.0.0.1:54329/test',
      );
      expect(redactUrl('mysql://root@127.0.0.1:3306/test')).toBe('mysql://root@127.0.0.1:3306/test');
    });
  });

  describe('typeormOptions', () => {
    it('tags PostgreSQL connections and bounds the wait for a pooled connection', () => {
      const options = typeormOptions('postgres', { poolSize: 1, applicationName: 'spec-app', entities: [] });

      expect(options).toMatchObject({
        type: 'postgres',
        poolSize: 1,
        applicationName: 'spec-app',
        connectTimeoutMS: 2000,
        synchronize: true,
        dropSchema: false,
        retryAttempts: 0,
      });
    });

    it('gives MariaDB only options that mysql2 knows', () => {
      const options = typeormOptions('mariadb', {
        poolSize: 2,
        applicationName: 'spec-app',
        name: 'second',
        entities: [],
        extra: { queueLimit: 5 },
      });

      expect(options).toMatchObject({
        type: 'mariadb',
        name: 'second',
        poolSize: 2,
        connectTimeout: 2000,
        extra: { connectAttributes: { program_name: 'spec-app' }, queueLimit: 5 },
      });
      // mysql2 warns about (and ignores) the mysqljs option TypeORM would pass through.
      expect(options).not.toHaveProperty('acquireTimeout');
    });
  });
});
