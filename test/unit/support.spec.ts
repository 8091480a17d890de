import { redactUrl } from '../support/database-urls';
import { ACQUIRE_TIMEOUT_MS, typeormOptions } from '../support/databases';
import { runSeed, SEED_VARIABLE, seededRandom, seedLine } from '../support/random';
import { DEFAULT_WAIT_MS, waitFor } from '../support/wait-for';

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

    // The deadline on a clock the test moves itself: exact, whatever the machine's load.
    describe('at its deadline', () => {
      beforeEach(() => jest.useFakeTimers());
      afterEach(() => jest.useRealTimers());

      /** Whether `promise` has settled, after letting pending promise callbacks run. */
      async function settled(promise: Promise<unknown>): Promise<boolean> {
        let done = false;
        promise.then(
          () => (done = true),
          () => (done = true),
        );
        await jest.advanceTimersByTimeAsync(0);
        return done;
      }

      it('rejects exactly at the deadline, with why the last attempt failed', async () => {
        const waiting = waitFor(
          () => {
            throw new Error('still 2 connections');
          },
          { timeoutMs: 150, intervalMs: 10 },
        );
        const outcome = expect(waiting).rejects.toThrow(/gave up after 150 ms .*the last attempt threw: still 2 connections/);

        await jest.advanceTimersByTimeAsync(149);
        expect(await settled(waiting)).toBe(false);
        await jest.advanceTimersByTimeAsync(1);
        expect(await settled(waiting)).toBe(true);
        await outcome;
      });

      it('says when the condition stayed false', async () => {
        const waiting = waitFor(() => false, { timeoutMs: 50, intervalMs: 10 });
        const outcome = expect(waiting).rejects.toThrow(/the last attempt returned false/);

        await jest.advanceTimersByTimeAsync(50);
        expect(await settled(waiting)).toBe(true);
        await outcome;
      });

      it('stops waiting for a probe that never settles at the deadline', async () => {
        const waiting = waitFor(() => new Promise<never>(() => undefined), { timeoutMs: 100 });
        const outcome = expect(waiting).rejects.toThrow(/no attempt finished in time/);

        await jest.advanceTimersByTimeAsync(99);
        expect(await settled(waiting)).toBe(false);
        await jest.advanceTimersByTimeAsync(1);
        expect(await settled(waiting)).toBe(true);
        await outcome;
      });

      it(`waits ${DEFAULT_WAIT_MS} ms by default`, async () => {
        const waiting = waitFor(() => false);
        const outcome = expect(waiting).rejects.toThrow(`gave up after ${DEFAULT_WAIT_MS} ms`);

        await jest.advanceTimersByTimeAsync(DEFAULT_WAIT_MS - 1);
        expect(await settled(waiting)).toBe(false);
        await jest.advanceTimersByTimeAsync(1);
        expect(await settled(waiting)).toBe(true);
        await outcome;
      });
    });
  });

  describe('seeded randomness', () => {
    it('gives the same numbers for the same seed and label, whatever ran before', () => {
      const first = seededRandom('request 7', 42);
      const drawn = [first(), first(), first()];
      seededRandom('request 8', 42)();

      const again = seededRandom('request 7', 42);
      expect([again(), again(), again()]).toEqual(drawn);
      expect(drawn.every((n) => n >= 0 && n < 1)).toBe(true);
    });

    it('gives other numbers for another label or another seed', () => {
      const draw = (label: string, seed: number) => {
        const random = seededRandom(label, seed);
        return [random(), random()];
      };
      expect(draw('request 7', 42)).not.toEqual(draw('request 8', 42));
      expect(draw('request 7', 42)).not.toEqual(draw('request 7', 43));
    });

    it('draws whole numbers within both bounds, and chances of 0 and 1 as such', () => {
      const random = seededRandom('bounds', 1);
      const ints = Array.from({ length: 1000 }, () => random.int(1, 10));
      expect(new Set(ints)).toEqual(new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
      expect(Array.from({ length: 100 }, () => random.chance(0)).some(Boolean)).toBe(false);
      expect(Array.from({ length: 100 }, () => random.chance(1)).every(Boolean)).toBe(true);
    });

    describe('the run seed', () => {
      const saved = process.env[SEED_VARIABLE];
      afterEach(() => {
        if (saved === undefined) delete process.env[SEED_VARIABLE];
        else process.env[SEED_VARIABLE] = saved;
      });

      it(`is ${SEED_VARIABLE} when set, and is printed as such`, () => {
        process.env[SEED_VARIABLE] = '123456';
        expect(runSeed()).toBe(123456);
        expect(seedLine()).toContain(`${SEED_VARIABLE}=123456`);
      });

      it('is drawn once when unset, then kept for the rest of the run', () => {
        delete process.env[SEED_VARIABLE];
        const seed = runSeed();
        expect(Number.isInteger(seed)).toBe(true);
        expect(process.env[SEED_VARIABLE]).toBe(String(seed));
        expect(runSeed()).toBe(seed);
      });

      it.each(['abc', '-1', '1.5', '4294967296'])(`refuses ${SEED_VARIABLE}=%s, saying what a seed is`, (value) => {
        process.env[SEED_VARIABLE] = value;
        expect(() => runSeed()).toThrow(
          `${SEED_VARIABLE}=${value} is not a seed: random tests could not replay a run with it. ` +
            `Set ${SEED_VARIABLE} to a whole number from 0 to 4294967295 (as printed by a run), or unset it.`,
        );
      });
    });
  });

  describe('redactUrl', () => {
    it('hides the password and keeps the rest', () => {
      expect(redactUrl('postgres://postgres:s3cret@127.0.0.1:54329/test')).toBe('postgres://postgres:***@127.0.0.1:54329/test');
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
        connectTimeoutMS: ACQUIRE_TIMEOUT_MS,
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
        connectTimeout: ACQUIRE_TIMEOUT_MS,
        extra: { connectAttributes: { program_name: 'spec-app' }, queueLimit: 5 },
      });
      // mysql2 warns about (and ignores) the mysqljs option TypeORM would pass through.
      expect(options).not.toHaveProperty('acquireTimeout');
    });

    it('takes a longer acquisition timeout for pools that queue on purpose', () => {
      const entities: never[] = [];
      expect(
        typeormOptions('postgres', { poolSize: 1, applicationName: 'q', entities, acquireTimeoutMs: 120_000 }),
      ).toMatchObject({
        connectTimeoutMS: 120_000,
      });
      expect(typeormOptions('mariadb', { poolSize: 1, applicationName: 'q', entities, acquireTimeoutMs: 120_000 })).toMatchObject(
        {
          connectTimeout: 120_000,
        },
      );
    });
  });
});
