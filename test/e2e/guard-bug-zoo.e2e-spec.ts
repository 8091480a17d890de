import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { NestedConnectionError, TransactionalModule } from '../../lib';
import { type CreateAppOptions } from '../support/app';
import {
  countPoolAcquisitions,
  defineZoo,
  ErrorRecorder,
  recordingFilterProviders,
  ROWS_PER_ITERATION,
  siteAt,
  ZOO_BUGS,
  type ZooAnswer,
  type ZooBug,
} from '../support/bug-zoo';
import { engines, QUEUED_ACQUIRE_TIMEOUT_MS, typeormOptions } from '../support/databases';
import { tableOf, ZooItem } from '../support/entities';
import { postJson } from '../support/http';
import { expectNothingLeaked } from '../support/leaks';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(ZooItem);
const zoo = defineZoo();
const CONCURRENT_REQUESTS = 100;
const CONCURRENT_BUGGY_REQUESTS = 20;
/** Jest timeout of the tests that queue requests: above the pool's acquisition timeout, so that one stuck shows as such. */
const QUEUED_TEST_TIMEOUT_MS = 2 * QUEUED_ACQUIRE_TIMEOUT_MS;

describe.each(engines)('the bug zoo on $name', (engine) => {
  const db = suiteObserver(engine);
  const q = (sql: string) => (engine.name === 'postgres' ? sql : sql.replace(/\$\d+/g, '?'));
  const rowsOf = (kind: string) =>
    db.query<ZooItem>(q(`SELECT id, label, kind, note FROM ${TABLE} WHERE kind = $1 ORDER BY id`), [kind]);

  function appOptions(poolSize: number, applicationName: string): CreateAppOptions {
    return {
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(engine, {
            poolSize,
            applicationName,
            entities: [ZooItem],
            // Up to 100 requests queue for one connection: the last waits for all the others, seconds
            // on a busy machine. The guard's failures never wait for the pool: the tests count that.
            acquireTimeoutMs: QUEUED_ACQUIRE_TIMEOUT_MS,
          }),
        ),
        // No guard option: under NODE_ENV=test the default is 'throw'.
        TransactionalModule.forRoot(),
        ...zoo.imports,
      ],
      controllers: zoo.controllers,
      providers: [...zoo.providers, ...recordingFilterProviders],
    };
  }

  describe.each([1, 10])('with a pool of %i', (poolSize) => {
    const applicationName = `guard-zoo-${poolSize}`;
    // No `tables`: each bug's tests below read the outcome of requests made in its beforeAll, rows included;
    // its afterAll empties the table.
    const testApp = suiteApp(db, { applicationName, app: () => appOptions(poolSize, applicationName) });
    let dataSource: DataSource;
    let recorder: ErrorRecorder;

    beforeAll(async () => {
      dataSource = testApp.dataSource;
      recorder = testApp.get(ErrorRecorder);
      // Rows another suite, or an interrupted earlier run, may have left.
      await db.query(`DELETE FROM ${TABLE}`);
    });

    describe.each(ZOO_BUGS)('when a service $does', (bug: ZooBug) => {
      let response: { status: number; body: unknown };
      let error: Error;
      let poolRequests: number;

      // One request: the first this route ever gets. Each test below reads a part of its outcome.
      beforeAll(async () => {
        const pool = countPoolAcquisitions(dataSource);
        try {
          response = await postJson(`${testApp.url}/zoo/${bug.kind}`, { label: `${bug.kind}-first` });
        } finally {
          pool.restore();
        }
        poolRequests = pool.count();
        expect(recorder.errors).toHaveLength(1);
        error = recorder.errors[0] as Error;
      });

      afterAll(async () => {
        recorder.clear();
        await db.query(`DELETE FROM ${TABLE}`);
      });

      it('fails the first request with NestedConnectionError, before asking the pool for a second connection', () => {
        expect(response).toEqual({ status: 500, body: { statusCode: 500, error: 'NestedConnectionError' } });
        expect(error).toBeInstanceOf(NestedConnectionError);
        // Only the unit of work's own connection was requested from the pool: the guard rejected the
        // second one before the pool saw it, so nothing waited for the acquisition timeout (pool of 1)
        // and no second connection was taken (pool of 10).
        expect(poolRequests).toBe(1);
      });

      it('names the culprit, the route and the call site (service file and line)', () => {
        expect(error.message).toContain(`${bug.culprit} during the transaction of POST /zoo/${bug.kind} (at `);
        expect(error.message).toMatch(new RegExp(`\\(at ${siteAt(bug.site, bug.bugMarker).source}\\)`));
      });

      it('names where the unit of work took its own connection', () => {
        expect(error.message).toMatch(new RegExp(`holds one \\(taken at ${siteAt(bug.site, bug.holderMarker).source}\\)`));
      });

      // A stack capture costs tens of microseconds: a route captures its holder's stack on its first request only.
      it("names it on the route's later requests too, as its first request's site", async () => {
        recorder.clear();
        await postJson(`${testApp.url}/zoo/${bug.kind}`, { label: `${bug.kind}-second` });
        expect(recorder.errors).toHaveLength(1);
        expect((recorder.errors[0] as Error).message).toMatch(
          new RegExp(
            `holds one \\(taken at ${siteAt(bug.site, bug.holderMarker).source}, where this route's first request took it\\)`,
          ),
        );
      });

      it('explains the deadlock and the fix', () => {
        expect(error.message).toContain('It would take a second pooled connection while this unit of work');
        expect(error.message).toContain('which deadlocks the pool under load.');
        expect(error.message).toContain(bug.fix);
      });

      it('rolls the request back and leaks nothing', async () => {
        expect(await rowsOf(bug.kind)).toEqual([]);
        await expectNothingLeaked({ dataSource, db, applicationName });
      });

      // The seeds' failure needs load: every request holds a connection and waits for a second one.
      it(
        `fails all of ${CONCURRENT_BUGGY_REQUESTS} concurrent requests with NestedConnectionError, none by timeout`,
        async () => {
          recorder.clear();

          const responses = await Promise.all(
            Array.from({ length: CONCURRENT_BUGGY_REQUESTS }, (_, i) =>
              postJson(`${testApp.url}/zoo/${bug.kind}`, { label: `${bug.kind}-${i}` }),
            ),
          );

          expect(responses.map((r) => r.status)).toEqual(responses.map(() => 500));
          expect(recorder.errors.map((e) => (e as Error).name)).toEqual(responses.map(() => 'NestedConnectionError'));
          expect(await rowsOf(bug.kind)).toEqual([]);
          await expectNothingLeaked({ dataSource, db, applicationName });
        },
        QUEUED_TEST_TIMEOUT_MS,
      );
    });
  });

  describe('the same services written correctly, on a pool of 1', () => {
    const applicationName = 'guard-zoo-fixed';
    const testApp = suiteApp(db, { applicationName, tables: [ZooItem], app: () => appOptions(1, applicationName) });
    let recorder: ErrorRecorder;

    beforeAll(() => {
      recorder = testApp.get(ErrorRecorder);
    });

    afterEach(() => {
      recorder.clear();
    });

    const requests = (kind: string) =>
      Promise.all(
        Array.from({ length: CONCURRENT_REQUESTS }, (_, i) =>
          postJson<ZooAnswer>(`${testApp.url}/fixed/${kind}`, { label: `${kind}-${i}` }),
        ),
      );
    const labels = (kind: string) => Array.from({ length: CONCURRENT_REQUESTS }, (_, i) => `${kind}-${i}`).sort();
    const oneToN = Array.from({ length: CONCURRENT_REQUESTS }, (_, i) => i + 1);

    // Each request holds the one connection from its first query to its COMMIT, so the requests run
    // one after another and the k-th sees its own uncommitted row plus the k-1 committed before it.
    it.each(['repository', 'data-source-query', 'query-builder', 'entity-manager', 'query-runner'])(
      'serves %s with 100 concurrent requests, each seeing its own uncommitted row',
      async (kind) => {
        const responses = await requests(kind);

        expect(recorder.errors).toEqual([]);
        expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
        expect(responses.map((r) => r.body.total).sort((a, b) => a! - b!)).toEqual(oneToN);
        const rows = await rowsOf(kind);
        expect(rows.map((r) => r.label).sort()).toEqual(labels(kind));
      },
      QUEUED_TEST_TIMEOUT_MS,
    );

    it(
      'serves nested-transaction with 100 concurrent requests, the inner transaction a savepoint',
      async () => {
        const responses = await requests('nested-transaction');

        expect(recorder.errors).toEqual([]);
        expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
        const rows = await rowsOf('nested-transaction');
        const expected = labels('nested-transaction')
          .flatMap((label) => [label, `${label}/webhook`])
          .sort();
        expect(rows.map((r) => r.label).sort()).toEqual(expected);
      },
      QUEUED_TEST_TIMEOUT_MS,
    );

    it(
      'serves nested-iteration with 100 concurrent requests, reading the rows before querying for each',
      async () => {
        const responses = await requests('nested-iteration');

        expect(recorder.errors).toEqual([]);
        expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
        // Every nested query ran in the unit of work: it saw the row inserted just before.
        const ones = Array.from({ length: ROWS_PER_ITERATION }, () => 1);
        expect(responses.map((r) => r.body.seen)).toEqual(responses.map(() => ones));
        const rows = await rowsOf('nested-iteration');
        expect(rows).toHaveLength(CONCURRENT_REQUESTS * ROWS_PER_ITERATION);
        expect(new Set(rows.map((r) => r.note))).toEqual(new Set([`seen ${ones.join(',')}`]));
      },
      QUEUED_TEST_TIMEOUT_MS,
    );
  });
});
