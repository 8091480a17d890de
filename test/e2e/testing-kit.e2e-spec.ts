import { Body, ConflictException, Controller, Injectable, Post } from '@nestjs/common';
import { InjectDataSource, InjectRepository, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions, EntityManager, Repository } from 'typeorm';
import {
  ConnectionAcquisitionError,
  type GuardMode,
  InjectTxRepository,
  NestedConnectionError,
  TransactionalError,
  TransactionalModule,
  Tx,
} from '../../lib';
// What users import as 'nestjs-request-transaction/testing' (jest maps that name here too; tsc does not).
import { ConnectionAudit, rollbackPerTest, singleConnectionPool, type TestTransaction } from '../../lib/testing';
import { createApp, type CreateAppOptions, type TestApp } from '../support/app';
import { mariadbThreadIds } from '../support/app-connections';
import { ErrorRecorder, recordingFilterProviders, siteAt } from '../support/bug-zoo';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { postJson } from '../support/http';
import { expectNothingLeaked, poolStats } from '../support/leaks';
import { type MariadbObserver, type PostgresObserver } from '../support/observer';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

interface LabelBody {
  label: string;
}

@Injectable()
class KitService {
  constructor(
    @InjectTxRepository(Item) private readonly items: Repository<Item>,
    @InjectDataSource() private readonly dataSource: DataSource,
    @InjectRepository(Item) private readonly plainItems: Repository<Item>,
  ) {}

  async create(label: string): Promise<{ id: number }> {
    const item = await this.items.save(this.items.create({ label }));
    return { id: item.id };
  }

  /** The bug: the count runs on a second pooled connection while the request holds one. */
  async createAndCount(tx: EntityManager, label: string): Promise<{ total: number }> {
    await tx.insert(Item, { label });
    const [row] = await this.dataSource.query(`SELECT COUNT(*) AS n FROM ${TABLE}`); // kit:nested-query
    return { total: Number(row.n) };
  }

  /** Half converted: a plain read while the request holds nothing, a write in it, a plain read while it holds one. */
  async readWriteRead(tx: EntityManager, label: string): Promise<{ before: number; after: number }> {
    const before = await this.plainItems.count(); // kit:read-before
    await tx.insert(Item, { label });
    const after = await this.plainItems.count(); // kit:read-after-write
    return { before, after };
  }

  async refuse(label: string): Promise<never> {
    await this.items.save(this.items.create({ label }));
    throw new ConflictException(`${label} refused`);
  }
}

@Controller('kit')
class KitController {
  constructor(private readonly kit: KitService) {}

  @Post('items')
  create(@Body() body: LabelBody) {
    return this.kit.create(body.label);
  }

  @Post('report')
  report(@Body() body: LabelBody, @Tx() tx: EntityManager) {
    return this.kit.createAndCount(tx, body.label);
  }

  @Post('read-write-read')
  readWriteRead(@Body() body: LabelBody, @Tx() tx: EntityManager) {
    return this.kit.readWriteRead(tx, body.label);
  }

  @Post('refuse')
  refuse(@Body() body: LabelBody) {
    return this.kit.refuse(body.label);
  }
}

describe.each(engines)('the testing kit on $name', (engine: Engine) => {
  const db = suiteObserver(engine);
  const labels = async () => (await db.query<{ label: string }>(`SELECT label FROM ${TABLE} ORDER BY label`)).map((r) => r.label);

  function kitApp(typeorm: ReturnType<typeof typeormOptions>, guard: GuardMode): CreateAppOptions {
    return {
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeorm),
        TransactionalModule.forRoot({ guard }),
        TransactionalModule.forFeature([Item]),
        TypeOrmModule.forFeature([Item]),
      ],
      controllers: [KitController],
      providers: [KitService, ...recordingFilterProviders],
    };
  }

  describe('singleConnectionPool()', () => {
    const poolKey = engine.name === 'postgres' ? 'max' : 'connectionLimit';

    it('sets a pool of one connection and the acquisition timeout, keeping the other options', () => {
      const options = typeormOptions(engine, { poolSize: 10, applicationName: 'kit-options', entities: [Item] });

      const single = singleConnectionPool(options, { acquireTimeoutMs: 750 });
      const byDefault = singleConnectionPool(options);

      const timeoutKey = engine.name === 'postgres' ? 'connectTimeoutMS' : 'connectTimeout';
      const extra = { ...options.extra, [poolKey]: 1 };
      // Object.entries(): the fields without the marker TransactionalModule checks at bootstrap.
      expect(Object.fromEntries(Object.entries(single))).toEqual({ ...options, poolSize: 1, [timeoutKey]: 750, extra });
      expect(Object.fromEntries(Object.entries(byDefault))).toEqual({ ...options, poolSize: 1, [timeoutKey]: 2000, extra });
      expect(options.poolSize).toBe(10);
    });

    it("overrides the driver's own pool size in extra, which TypeORM applies after poolSize", () => {
      const options = typeormOptions(engine, {
        poolSize: 10,
        applicationName: 'kit-options',
        entities: [Item],
        extra: { [poolKey]: 10 },
      });

      expect(singleConnectionPool(options).extra).toMatchObject({ [poolKey]: 1 });
      expect(options.extra).toMatchObject({ [poolKey]: 10 });
    });

    it('takes what a forRootAsync() factory returns (TypeOrmModuleOptions) as well as DataSourceOptions', () => {
      const moduleOptions: TypeOrmModuleOptions = {
        ...typeormOptions(engine, { poolSize: 10, applicationName: 'kit-options', entities: [Item] }),
        retryAttempts: 0,
      };
      const dataSourceOptions: DataSourceOptions = typeormOptions(engine, {
        poolSize: 10,
        applicationName: 'kit-options',
        entities: [Item],
      });

      const fromModule: TypeOrmModuleOptions = singleConnectionPool(moduleOptions);
      const fromDataSource: DataSourceOptions = singleConnectionPool(dataSourceOptions);

      expect(fromModule).toMatchObject({ retryAttempts: 0, poolSize: 1, extra: { [poolKey]: 1 } });
      expect(fromDataSource).toMatchObject({ poolSize: 1, extra: { [poolKey]: 1 } });
    });

    it('refuses a type whose pool it cannot size, and replication (a pool per server)', () => {
      expect(() => singleConnectionPool({ type: 'better-sqlite3', database: ':memory:' })).toThrow(
        new TransactionalError(
          "singleConnectionPool(): unsupported data source type 'better-sqlite3'. It knows how to size the pools of 'postgres', " +
            "'mysql' and 'mariadb' (the types TransactionalModule supports); set type to one of them.",
        ),
      );
      expect(() => singleConnectionPool({ retryAttempts: 0 })).toThrow(/unsupported data source type undefined/);
      const options = typeormOptions(engine, { poolSize: 10, applicationName: 'kit-options', entities: [Item] });
      expect(() => singleConnectionPool({ ...options, replication: { master: {}, slaves: [] } } as typeof options)).toThrow(
        /^singleConnectionPool\(\): the options set replication, and TypeORM opens a pool per server then/,
      );
    });

    it('fails at bootstrap when the pool size is set again after singleConnectionPool()', async () => {
      const options = singleConnectionPool(
        typeormOptions(engine, { poolSize: 1, applicationName: 'kit-reset', entities: [Item] }),
      );
      let built: DataSource | undefined;

      const started = createApp({
        adapter: 'express',
        imports: [
          TypeOrmModule.forRootAsync({
            useFactory: () => ({ ...options, extra: { ...options.extra, [poolKey]: 10 } }),
            // Kept to close it: the failed bootstrap leaves it open.
            dataSourceFactory: async (resolved) => (built = await new DataSource(resolved!).initialize()),
          }),
          TransactionalModule.forRoot({ guard: 'throw' }),
        ],
      });

      try {
        await expect(started).rejects.toThrow(
          new TransactionalError(
            "TransactionalModule.forRoot(): data source 'default' was configured with singleConnectionPool(), but its " +
              `pool opens up to 10 connections: the pool size was set again after the call (poolSize or extra.${poolKey} ` +
              'on the options it returned). A test suite on a larger pool no longer proves that each request takes one ' +
              'connection. Call singleConnectionPool() last, on the options exactly as TypeORM gets them.',
          ),
        );
      } finally {
        await built?.destroy();
      }
    });

    describe('on options that set a pool of 10 (poolSize and extra)', () => {
      const applicationName = 'kit-single-of-ten';
      const testApp = suiteApp(db, {
        applicationName,
        tables: [Item],
        app: () => {
          const options = typeormOptions(engine, { poolSize: 10, applicationName, entities: [Item], extra: { [poolKey]: 10 } });
          return kitApp(singleConnectionPool(options, { acquireTimeoutMs: 20_000 }), 'throw');
        },
      });
      let dataSource: DataSource;

      beforeAll(() => {
        dataSource = testApp.dataSource;
      });

      it('serves 24 concurrent requests on one connection: the server sees one connection of the app', async () => {
        const labels24 = Array.from({ length: 24 }, (_, i) => `c-${String(i).padStart(2, '0')}`);

        const responses = await Promise.all(labels24.map((label) => postJson(`${testApp.url}/kit/items`, { label })));

        expect(responses.map((r) => r.status)).toEqual(labels24.map(() => 201));
        expect(await labels()).toEqual(labels24);
        // PostgreSQL: the server's backends of the app (application_name). MariaDB: the server's threads
        // that are the app's pool's (other clients of the database may still be closing theirs).
        const connections =
          engine.name === 'postgres'
            ? (await (db as PostgresObserver).backends(applicationName)).length
            : (await (db as MariadbObserver).processlist()).filter((p) => mariadbThreadIds(dataSource).includes(Number(p.id)))
                .length;
        expect(connections).toBe(1);
        if (engine.name === 'mariadb') expect(mariadbThreadIds(dataSource)).toHaveLength(1);
        expect(poolStats(dataSource).total).toBe(1);
      });
    });

    describe("when a request takes a second connection and the guard is 'off'", () => {
      const applicationName = 'kit-single-pool';
      const acquireTimeoutMs = 500;
      const testApp = suiteApp(db, {
        applicationName,
        tables: [Item],
        app: () => {
          const options = typeormOptions(engine, { poolSize: 10, applicationName, entities: [Item] });
          return kitApp(singleConnectionPool(options, { acquireTimeoutMs }), 'off');
        },
      });
      let dataSource: DataSource;
      let recorder: ErrorRecorder;

      beforeAll(() => {
        dataSource = testApp.dataSource;
        recorder = testApp.get(ErrorRecorder);
      });

      it('fails the request with the acquisition-timeout error instead of hanging, and recovers', async () => {
        const response = await postJson(`${testApp.url}/kit/report`, { label: 'starved' });

        expect(response.status).toBe(500);
        expect(recorder.errors).toHaveLength(1);
        const [error] = recorder.errors as Error[];
        expect(error).not.toBeInstanceOf(NestedConnectionError);
        if (engine.name === 'postgres') {
          expect(error.message).toBe('timeout exceeded when trying to connect');
        } else {
          expect(error).toBeInstanceOf(ConnectionAcquisitionError);
          expect(error.message).toContain(
            `No connection of data source 'default' within connectTimeout (${acquireTimeoutMs} ms) (pool: 1 of 1 open, 0 idle`,
          );
        }
        // The pool really had one connection, and the request's work was rolled back.
        expect(poolStats(dataSource).total).toBe(1);
        expect(await labels()).toEqual([]);
        await expectNothingLeaked({ dataSource, db, applicationName });

        // The pool is usable again.
        expect(await postJson(`${testApp.url}/kit/items`, { label: 'after' })).toMatchObject({ status: 201 });
        expect(await labels()).toEqual(['after']);
        await expectNothingLeaked({ dataSource, db, applicationName });
      });
    });
  });

  describe("ConnectionAudit, on a pool of 2 in 'warn' mode", () => {
    const applicationName = 'kit-audit';
    let dataSource: DataSource;
    let audit: ConnectionAudit;

    // Before the app closes.
    afterAll(() => {
      audit?.detach();
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => kitApp(typeormOptions(engine, { poolSize: 2, applicationName, entities: [Item] }), 'warn'),
    });

    beforeAll(() => {
      dataSource = testApp.dataSource;
      audit = ConnectionAudit.attach(dataSource);
    });

    beforeEach(() => audit.reset());

    it('records one acquisition per unit of work for correct routes, and assertOneConnectionPerUnit() passes', async () => {
      const responses = await Promise.all(
        Array.from({ length: 10 }, (_, i) => postJson(`${testApp.url}/kit/items`, { label: `item-${i}` })),
      );

      expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
      const units = audit.units();
      expect(units).toHaveLength(10);
      for (const unit of units) {
        expect(unit).toMatchObject({ name: 'POST /kit/items', acquisitions: 1, maxHeld: 1 });
        expect(unit.sites).toHaveLength(1);
      }
      expect(audit.violations()).toEqual([]);
      expect(() => audit.assertOneConnectionPerUnit()).not.toThrow();
      expect(await labels()).toHaveLength(10);
    });

    it('lists a route that takes a second connection in violations(), and assertOneConnectionPerUnit() throws naming it', async () => {
      await postJson(`${testApp.url}/kit/items`, { label: 'fine' });
      const response = await postJson<{ total: number }>(`${testApp.url}/kit/report`, { label: 'nested' });

      expect(response.status).toBe(201);
      const violations = audit.violations();
      expect(violations).toEqual([
        { name: 'POST /kit/report', acquisitions: 2, maxHeld: 2, sites: [expect.any(String), expect.any(String)] },
      ]);
      expect(() => audit.assertOneConnectionPerUnit()).toThrow(TransactionalError);
      expect(() => audit.assertOneConnectionPerUnit()).toThrow(
        /^1 unit\(s\) of work took more than one pooled connection; under load they deadlock the pool:\n- POST \/kit\/report: 2 acquisitions, 2 held at once; taken at /,
      );
      expect(audit.units().map((u) => u.name)).toEqual(['POST /kit/items', 'POST /kit/report']);
    });

    it('names where each connection was taken', async () => {
      await postJson(`${testApp.url}/kit/report`, { label: 'nested' });

      const [unit] = audit.violations();
      expect(unit.sites[1]).toMatch(siteAt('KitService.createAndCount', 'kit:nested-query', __filename));
    });

    it('keeps work outside any unit of work apart, never as a violation', async () => {
      await dataSource.query('SELECT 1 AS one');
      await postJson(`${testApp.url}/kit/items`, { label: 'inside' });

      expect(audit.units()).toEqual([
        expect.objectContaining({ name: '(outside any unit of work)', acquisitions: 1, maxHeld: 1 }),
        expect.objectContaining({ name: 'POST /kit/items', acquisitions: 1, maxHeld: 1 }),
      ]);
      expect(audit.violations()).toEqual([]);
    });

    it('lists the plain acquisitions of units of work in plainAcquisitions() and checklist(), marking those made while holding', async () => {
      const response = await postJson(`${testApp.url}/kit/read-write-read`, { label: 'half converted' });

      // The second read ran on another connection: it did not see the request's uncommitted row.
      expect(response).toEqual({ status: 201, body: { before: 0, after: 0 } });
      expect(audit.plainAcquisitions()).toEqual([
        {
          unit: 'POST /kit/read-write-read',
          site: expect.stringMatching(siteAt('KitService.readWriteRead', 'kit:read-before', __filename)),
          whileHolding: false,
        },
        {
          unit: 'POST /kit/read-write-read',
          site: expect.stringMatching(siteAt('KitService.readWriteRead', 'kit:read-after-write', __filename)),
          whileHolding: true,
        },
      ]);
      const [first, second, ...rest] = audit.checklist().split('\n');
      expect(rest).toEqual([]);
      expect(first).toMatch(
        new RegExp(
          `^- \\[ \\] ${siteAt('KitService.readWriteRead', 'kit:read-before', __filename).source}: POST /kit/read-write-read \\(1\\)$`,
        ),
      );
      expect(second).toMatch(
        new RegExp(
          `^- \\[ \\] ${siteAt('KitService.readWriteRead', 'kit:read-after-write', __filename).source}: POST /kit/read-write-read \\(1\\); ` +
            'while the unit of work held its connection \\(a guard violation\\)$',
        ),
      );
      expect(() => audit.assertNoPlainAcquisitions()).toThrow(TransactionalError);
      expect(() => audit.assertNoPlainAcquisitions()).toThrow(`:\n${audit.checklist()}`);
      expect(audit.violations()).toEqual([expect.objectContaining({ name: 'POST /kit/read-write-read', acquisitions: 3 })]);
    });

    it('lists no plain acquisition for a converted route, nor for work outside units of work', async () => {
      await dataSource.query('SELECT 1 AS one');
      await postJson(`${testApp.url}/kit/items`, { label: 'converted' });

      expect(audit.plainAcquisitions()).toEqual([]);
      expect(audit.checklist()).toBe('');
      expect(() => audit.assertNoPlainAcquisitions()).not.toThrow();
    });

    it('forgets on reset() and stops recording on detach()', async () => {
      await postJson(`${testApp.url}/kit/report`, { label: 'before reset' });
      audit.reset();
      expect(audit.units()).toEqual([]);

      const detached = ConnectionAudit.attach(dataSource);
      detached.detach();
      await postJson(`${testApp.url}/kit/report`, { label: 'after detach' });

      expect(detached.units()).toEqual([]);
      expect(audit.violations()).toHaveLength(1);
    });
  });

  describe('rollbackPerTest()', () => {
    const applicationName = 'kit-rollback';
    // No `tables`: emptied once, after start-up. Emptied after each test, they would hide rows a rollback left.
    const testApp = suiteApp(db, {
      applicationName,
      app: () => kitApp(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] }), 'throw'),
    });
    let dataSource: DataSource;
    let recorder: ErrorRecorder;
    let kit: TestTransaction;
    const seenByApp = async () =>
      (await dataSource.query<Array<{ label: string }>>(`SELECT label FROM ${TABLE} ORDER BY label`)).map((r) => r.label);

    beforeAll(async () => {
      dataSource = testApp.dataSource;
      recorder = testApp.get(ErrorRecorder);
      kit = rollbackPerTest(testApp.app);
      await db.query(`DELETE FROM ${TABLE}`);
    });

    describe('in tests wrapped in begin() and rollback()', () => {
      beforeEach(() => kit.begin());
      // Then the leak check of suiteApp().
      afterEach(() => kit.rollback());
      afterEach(() => {
        recorder.clear();
      });

      it('A: sees the rows its requests created, which nobody outside sees', async () => {
        for (const label of ['a-1', 'a-2', 'a-3']) {
          expect(await postJson(`${testApp.url}/kit/items`, { label })).toMatchObject({ status: 201 });
        }

        expect(await seenByApp()).toEqual(['a-1', 'a-2', 'a-3']);
        expect(await labels()).toEqual([]);
      });

      it("B: runs after A and does not see A's rows", async () => {
        expect(await seenByApp()).toEqual([]);

        expect(await postJson(`${testApp.url}/kit/items`, { label: 'b-1' })).toMatchObject({ status: 201 });

        expect(await seenByApp()).toEqual(['b-1']);
      });

      it('rolls back only the savepoint of a request that throws', async () => {
        expect(await postJson(`${testApp.url}/kit/items`, { label: 'kept' })).toMatchObject({ status: 201 });
        expect(await postJson(`${testApp.url}/kit/refuse`, { label: 'refused' })).toMatchObject({ status: 409 });
        expect(await postJson(`${testApp.url}/kit/items`, { label: 'kept-too' })).toMatchObject({ status: 201 });

        expect(await seenByApp()).toEqual(['kept', 'kept-too']);
      });

      it('keeps the guard working: a second connection still fails with NestedConnectionError', async () => {
        const response = await postJson(`${testApp.url}/kit/report`, { label: 'nested' });

        expect(response.status).toBe(500);
        expect(recorder.errors).toHaveLength(1);
        expect(recorder.errors[0]).toBeInstanceOf(NestedConnectionError);
        expect((recorder.errors[0] as Error).message).toContain('during the transaction of POST /kit/report');
        expect(await seenByApp()).toEqual([]);
      });
    });

    it('leaves nothing behind once the tests rolled back: the observer sees none of their rows', async () => {
      expect(await labels()).toEqual([]);
      expect(await seenByApp()).toEqual([]);
      await expectNothingLeaked({ dataSource, db, applicationName });
    });
  });

  describe('rollbackPerTest(() => app), called at describe level before the app exists', () => {
    const applicationName = 'kit-rollback-getter';
    const kit = rollbackPerTest(() => testApp.app);
    beforeEach(() => kit.begin());
    // Before the leak check of suiteApp() (hooks of one describe run in the order they are declared).
    afterEach(() => kit.rollback());

    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => kitApp(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] }), 'throw'),
    });

    it("runs the test's requests in its transaction, which nobody outside sees", async () => {
      expect(await postJson(`${testApp.url}/kit/items`, { label: 'getter' })).toMatchObject({ status: 201 });

      const seen = await testApp.app.get(DataSource).query<Array<{ label: string }>>(`SELECT label FROM ${TABLE}`);
      expect(seen.map((r) => r.label)).toEqual(['getter']);
      expect(await labels()).toEqual([]);
    });
  });

  describe('rollbackPerTest() given no application', () => {
    it('says at the call that the app does not exist yet at describe level, and what to pass instead', () => {
      // What `rollbackPerTest(app)` at describe level passes: the variable, before beforeAll assigned it.
      const notYetCreated = undefined as TestApp['app'] | undefined;

      expect(() => rollbackPerTest(notYetCreated as TestApp['app'])).toThrow(
        new TransactionalError(
          'rollbackPerTest(): expected the Nest application, got undefined. At describe level the application is not ' +
            'created yet (beforeAll has not run): pass a function that returns it, rollbackPerTest(() => app), or call ' +
            'rollbackPerTest(app) inside beforeAll, after the application is created.',
        ),
      );
    });

    it('says at begin() when the function returns no application', async () => {
      const kit = rollbackPerTest(() => undefined as unknown as TestApp['app']);

      await expect(kit.begin()).rejects.toThrow(
        /^rollbackPerTest\(\): the function given returned undefined, not the Nest application\. Create the application before/,
      );
    });
  });
});
