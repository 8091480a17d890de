import { Body, ConflictException, Controller, Injectable, type OnModuleInit, Post } from '@nestjs/common';
import { InjectDataSource, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, Repository } from 'typeorm';
import {
  type GuardMode,
  NestedConnectionError,
  NoTransaction,
  Transactional,
  TransactionalModule,
  TransactionHost,
  TransactionRunner,
  Tx,
} from '../../lib';
import {
  defineZoo,
  ErrorRecorder,
  recordingFilterProviders,
  ROWS_PER_ITERATION,
  siteAt,
  ZOO_BUGS,
  type ZooAnswer,
  type ZooBug,
} from '../support/bug-zoo';
import { engines, typeormOptions } from '../support/databases';
import { AuditEntry, Order, OrderLine, tableOf, ZooItem } from '../support/entities';
import { postJson } from '../support/http';
import { latch } from '../support/latch';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const ITEMS = tableOf(ZooItem);
const ORDERS = tableOf(Order);
const LINES = tableOf(OrderLine);
const AUDIT = tableOf(AuditEntry);
/** The suite's tables, children before parents. */
const TABLES = [ZooItem, OrderLine, Order, AuditEntry];
const zoo = defineZoo();
const CALLS_PER_ROUTE = 5;

// ---------------------------------------------------------------------------------------------
// A route with two distinct call sites, and routes that override the module's guard mode

@Injectable()
class AuditTrailService {
  constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

  async record(tx: EntityManager, label: string): Promise<void> {
    await tx.getRepository(ZooItem).insert({ label, kind: 'audit-trail' });
    await this.dataSource.query('SELECT 1 AS one'); // modes:first-site
    await this.dataSource.query('SELECT 2 AS two'); // modes:second-site
  }

  async lookup(tx: EntityManager, label: string): Promise<void> {
    await tx.getRepository(ZooItem).insert({ label, kind: 'override' });
    await this.dataSource.query('SELECT 1 AS one'); // modes:override-site
  }
}

@Controller('modes')
class ModesController {
  constructor(private readonly trail: AuditTrailService) {}

  @Post('two-sites')
  twoSites(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    return this.trail.record(tx, body.label);
  }

  @Post('route-warn')
  @Transactional({ guard: 'warn' })
  routeWarn(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    return this.trail.lookup(tx, body.label);
  }

  @Post('module-default')
  moduleDefault(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    return this.trail.lookup(tx, body.label);
  }
}

/** Class-level 'off', one handler back to 'throw': the handler's option wins. */
@Controller('lenient')
@Transactional({ guard: 'off' })
class LenientController {
  constructor(private readonly trail: AuditTrailService) {}

  @Post('class-off')
  classOff(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    return this.trail.lookup(tx, body.label);
  }

  @Post('handler-throw')
  @Transactional({ guard: 'throw' })
  handlerThrow(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    return this.trail.lookup(tx, body.label);
  }
}

// ---------------------------------------------------------------------------------------------
// Code that must never trip the guard

/** Seeds a row at start-up through a plain repository, outside any unit of work. */
@Injectable()
class StartupSeeder implements OnModuleInit {
  seeded?: number;

  constructor(@InjectRepository(Order) private readonly orders: Repository<Order>) {}

  async onModuleInit(): Promise<void> {
    await this.orders.save(this.orders.create({ label: 'seeded at start-up' }));
    this.seeded = await this.orders.count();
  }
}

/** Plain repositories, used outside units of work: from a script, a @NoTransaction() route, a hook. */
@Injectable()
class OrderDirectory {
  constructor(
    @InjectRepository(Order) readonly orders: Repository<Order>,
    @InjectRepository(AuditEntry) readonly audit: Repository<AuditEntry>,
  ) {}

  async createTwo(label: string): Promise<number> {
    await Promise.all([this.orders.save({ label: `${label}/a` }), this.orders.save({ label: `${label}/b` })]);
    return this.orders.countBy({ label: `${label}/a` });
  }
}

let holding = latch();
let release = latch();

@Controller('safe')
class SafeController {
  constructor(
    private readonly directory: OrderDirectory,
    private readonly host: TransactionHost,
  ) {}

  @Post('no-transaction')
  @NoTransaction()
  noTransaction(@Body() body: { label: string }) {
    return this.directory.createTwo(body.label);
  }

  @Post('after-commit')
  async afterCommit(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.save(Order, { label: body.label });
    this.host.afterCommit(async () => {
      await this.directory.audit.save({ label: `committed ${body.label}` });
    });
    return { ok: true };
  }

  @Post('after-rollback')
  async afterRollback(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.save(Order, { label: body.label });
    this.host.afterRollback(async () => {
      await this.directory.audit.save({ label: `rolled back ${body.label}` });
    });
    throw new ConflictException('refused');
  }

  @Post('cascade')
  async cascade(@Body() body: { label: string; lines: string[] }, @Tx() tx: EntityManager) {
    // Line labels are unique in the table: each is prefixed with its order's.
    const lines = body.lines.map((line) => ({ label: `${body.label}/${line}` }));
    const order = await tx.save(Order, tx.create(Order, { label: body.label, lines }));
    return { id: order.id };
  }

  @Post('relations')
  async relations(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    const lines = [{ label: `${body.label}/r-1` }, { label: `${body.label}/r-2` }];
    await tx.save(Order, tx.create(Order, { label: body.label, lines }));
    const orders = tx.getRepository(Order);
    const joined = await orders.find({ where: { label: body.label }, relations: { lines: true } });
    const separate = await orders.find({
      where: { label: body.label },
      relations: { lines: true },
      relationLoadStrategy: 'query',
    });
    const [, count] = await orders.findAndCount({ where: { label: body.label } });
    const line = await tx.findOneByOrFail(OrderLine, { label: `${body.label}/r-1`, order: { label: body.label } });
    const lazy = await line.order;
    return {
      joined: joined[0].lines.length,
      separate: separate[0].lines.length,
      count,
      lazy: lazy.label,
    };
  }

  @Post('savepoints')
  async savepoints(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.save(Order, { label: `${body.label}/outer` });
    await tx.transaction(async (first) => {
      await first.save(Order, { label: `${body.label}/first` });
      await first
        .transaction(async (second) => {
          await second.save(Order, { label: `${body.label}/second` });
          throw new Error('undo the second savepoint only');
        })
        .catch(() => undefined);
    });
    return { ok: true };
  }

  @Post('hold')
  async hold(@Body() body: { label: string }, @Tx() tx: EntityManager) {
    await tx.save(Order, { label: body.label });
    holding.resolve();
    await release.promise;
    return { ok: true };
  }
}

describe.each(engines)('the connection guard modes on $name', (engine) => {
  const db = suiteObserver(engine);
  const q = (sql: string) => (engine.name === 'postgres' ? sql : sql.replace(/\$\d+/g, '?'));
  const labelsOf = async (table: string, column: string, like: string) =>
    (
      await db.query<{ v: string }>(q(`SELECT ${column} AS v FROM ${table} WHERE ${column} LIKE $1 ORDER BY ${column}`), [like])
    ).map((r) => r.v);

  /**
   * The app of the calling describe, on the zoo and the routes above, with a recording logger and exception
   * filter. `tables` are emptied after its start-up and after each test (default: all the suite's).
   */
  function modesApp(guard: GuardMode | undefined, poolSize: number, applicationName: string, tables = TABLES) {
    const logger = new RecordingNestLogger();
    const testApp = suiteApp(db, {
      applicationName,
      tables,
      app: () => ({
        adapter: 'express',
        logger,
        imports: [
          TypeOrmModule.forRoot(
            typeormOptions(engine, { poolSize, applicationName, entities: [ZooItem, Order, OrderLine, AuditEntry] }),
          ),
          TransactionalModule.forRoot(guard === undefined ? {} : { guard }),
          TypeOrmModule.forFeature([Order, AuditEntry]),
          ...zoo.imports,
        ],
        controllers: [...zoo.controllers, ModesController, LenientController, SafeController],
        providers: [...zoo.providers, AuditTrailService, StartupSeeder, OrderDirectory, ...recordingFilterProviders],
      }),
    });
    return {
      testApp,
      logger,
      get dataSource() {
        return testApp.dataSource;
      },
      get host() {
        return testApp.get(TransactionHost);
      },
      get recorder() {
        return testApp.get(ErrorRecorder);
      },
    };
  }

  const callFiveTimes = async (url: string, kind: string) => {
    const responses = [];
    // One after another: concurrent buggy requests on a small pool would deadlock it (the seeds' story).
    for (let i = 0; i < CALLS_PER_ROUTE; i++) responses.push(await postJson<ZooAnswer>(url, { label: `${kind}-${i}` }));
    return responses;
  };

  describe("in 'warn' mode, on a pool of 2", () => {
    const ctx = modesApp('warn', 2, 'guard-modes-warn');

    describe.each(ZOO_BUGS)('when a service $does', (bug: ZooBug) => {
      it(`lets ${CALLS_PER_ROUTE} requests through, warns once for the call site and counts every violation`, async () => {
        const warnings = ctx.logger.library('warn').length;
        const violations = ctx.host.stats().guardViolations;

        const responses = await callFiveTimes(`${ctx.testApp.url}/zoo/${bug.kind}`, bug.kind);

        expect(ctx.recorder.errors).toEqual([]);
        expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
        const added = ctx.logger.library('warn').slice(warnings);
        expect(added).toHaveLength(1);
        expect(added[0].message).toContain(`${bug.culprit} during the transaction of POST /zoo/${bug.kind} (at `);
        expect(added[0].message).toMatch(siteAt(bug.site, bug.bugMarker));
        expect(added[0].message).toContain(bug.fix);
        expect(ctx.host.stats().guardViolations - violations).toBe(CALLS_PER_ROUTE * bug.violationsPerRequest);
        // The requests went through and committed their work.
        const rows = await db.query(q(`SELECT id FROM ${ITEMS} WHERE kind = $1`), [bug.kind]);
        expect(rows).toHaveLength(CALLS_PER_ROUTE * bug.rowsPerRequest);
      });
    });

    it("shows why it is a bug: the second connection does not see the unit of work's own rows", async () => {
      const [iteration] = await callFiveTimes(`${ctx.testApp.url}/zoo/nested-iteration`, 'nested-iteration');
      const [repository] = await callFiveTimes(`${ctx.testApp.url}/zoo/repository`, 'repository');

      // Each nested query ran on another connection, outside the transaction that inserted the row.
      expect(iteration.body.seen).toEqual(Array.from({ length: ROWS_PER_ITERATION }, () => 0));
      expect(repository.body.total).toBe(0);
    });

    it('warns once per distinct call site of a route: two sites, two warnings', async () => {
      const warnings = ctx.logger.library('warn').length;
      const violations = ctx.host.stats().guardViolations;

      const responses = await callFiveTimes(`${ctx.testApp.url}/modes/two-sites`, 'two-sites');

      expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
      const added = ctx.logger.library('warn').slice(warnings);
      expect(added).toHaveLength(2);
      expect(added[0].message).toMatch(siteAt('AuditTrailService.record', 'modes:first-site', __filename));
      expect(added[1].message).toMatch(siteAt('AuditTrailService.record', 'modes:second-site', __filename));
      expect(added.every((entry) => entry.message.includes('during the transaction of POST /modes/two-sites'))).toBe(true);
      expect(ctx.host.stats().guardViolations - violations).toBe(2 * CALLS_PER_ROUTE);
    });
  });

  describe("in 'off' mode, on a pool of 2", () => {
    const ctx = modesApp('off', 2, 'guard-modes-off');

    it.each(ZOO_BUGS.map((bug) => [bug.kind]))('lets %s through with nothing logged and nothing counted', async (kind) => {
      const responses = await callFiveTimes(`${ctx.testApp.url}/zoo/${kind}`, kind);

      expect(ctx.recorder.errors).toEqual([]);
      expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));
      expect(ctx.logger.library()).toEqual([]);
      expect(ctx.host.stats().guardViolations).toBe(0);
    });
  });

  describe("with per-route guard options in a 'throw' module, on a pool of 2", () => {
    const ctx = modesApp('throw', 2, 'guard-modes-route');

    afterEach(() => {
      ctx.recorder.clear();
    });

    it("@Transactional({ guard: 'warn' }) lets the route through with one warning; the module's 'throw' stops its neighbour", async () => {
      const warned = await callFiveTimes(`${ctx.testApp.url}/modes/route-warn`, 'route-warn');
      const thrown = await postJson(`${ctx.testApp.url}/modes/module-default`, { label: 'module-default' });

      expect(warned.map((r) => r.status)).toEqual(warned.map(() => 201));
      const warnings = ctx.logger.library('warn');
      expect(warnings).toHaveLength(1);
      expect(warnings[0].message).toContain('during the transaction of POST /modes/route-warn');
      expect(warnings[0].message).toMatch(siteAt('AuditTrailService.lookup', 'modes:override-site', __filename));
      expect(thrown.status).toBe(500);
      expect(ctx.recorder.errors).toHaveLength(1);
      expect(ctx.recorder.errors[0]).toBeInstanceOf(NestedConnectionError);
      expect((ctx.recorder.errors[0] as Error).message).toContain('during the transaction of POST /modes/module-default');
      expect(ctx.host.stats().guardViolations).toBe(CALLS_PER_ROUTE + 1);
      expect(await labelsOf(ITEMS, 'label', 'route-warn-%')).toHaveLength(CALLS_PER_ROUTE);
      expect(await labelsOf(ITEMS, 'label', 'module-default%')).toEqual([]);
    });

    it("a handler's guard option wins over its class's", async () => {
      const violations = ctx.host.stats().guardViolations;

      const off = await postJson(`${ctx.testApp.url}/lenient/class-off`, { label: 'class-off' });
      const strict = await postJson(`${ctx.testApp.url}/lenient/handler-throw`, { label: 'handler-throw' });

      expect(off.status).toBe(201);
      expect(strict.status).toBe(500);
      expect(ctx.recorder.errors).toHaveLength(1);
      expect(ctx.recorder.errors[0]).toBeInstanceOf(NestedConnectionError);
      expect((ctx.recorder.errors[0] as Error).message).toContain('during the transaction of POST /lenient/handler-throw');
      // 'off' counts nothing; 'throw' counts its one violation.
      expect(ctx.host.stats().guardViolations - violations).toBe(1);
    });

    it("TransactionRunner.run({ guard: 'warn' }) lets the call through outside HTTP; without it, it throws", async () => {
      const runner = ctx.testApp.app.get(TransactionRunner);
      const nested = async (tx: EntityManager) => {
        await tx.query('SELECT 1 AS one');
        return ctx.dataSource.query('SELECT 2 AS two'); // modes:runner-site
      };

      await expect(runner.run(nested, { name: 'lenient-job', guard: 'warn' })).resolves.toHaveLength(1);
      await expect(runner.run(nested, { name: 'strict-job' })).rejects.toThrow(NestedConnectionError);
      await expect(runner.run(nested, { name: 'strict-job' })).rejects.toThrow(/during the transaction of strict-job \(at /);

      const warnings = ctx.logger.library('warn').filter((e) => e.message.includes('lenient-job'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0].message).toMatch(siteAt('nested', 'modes:runner-site', __filename));
    });
  });

  describe("with no false positives in 'throw' mode (the default), on a pool of 2", () => {
    beforeAll(async () => {
      // Fresh tables, so that `synchronize` has real work to do at start-up (the lines first: they reference the orders).
      for (const table of [LINES, ORDERS, AUDIT]) await db.query(`DROP TABLE IF EXISTS ${table}`);
    });

    // Before the app closes: a request a failed test left waiting on the latches must end.
    afterAll(() => {
      holding.resolve();
      release.resolve();
    });

    // No table emptied after start-up: the first test reads the row the app seeded then. The afterEach below empties them.
    const ctx = modesApp(undefined, 2, 'guard-modes-safe', []);

    afterEach(async () => {
      // Nothing any test here does may trip the guard or make it speak.
      expect(ctx.host.stats().guardViolations).toBe(0);
      expect(ctx.logger.library()).toEqual([]);
      expect(ctx.recorder.errors.filter((e) => !(e instanceof ConflictException))).toEqual([]);
      ctx.recorder.clear();
      for (const entity of TABLES) await db.query(`DELETE FROM ${tableOf(entity)}`);
    });

    it('starts: synchronize creates the tables and onModuleInit queries through a plain repository', async () => {
      expect(ctx.testApp.app.get(StartupSeeder).seeded).toBe(1);
      expect(await labelsOf(ORDERS, 'label', 'seeded%')).toEqual(['seeded at start-up']);
      expect(await db.query(`SELECT id FROM ${LINES}`)).toEqual([]);
    });

    it('lets code outside any unit of work use plain repositories and the data source, while a request holds its connection', async () => {
      holding = latch();
      release = latch();
      const request = postJson(`${ctx.testApp.url}/safe/hold`, { label: 'held' });
      await holding.promise;

      const directory = ctx.testApp.app.get(OrderDirectory);
      await expect(directory.createTwo('outside')).resolves.toBe(1);
      await expect(ctx.dataSource.query('SELECT 1 AS one')).resolves.toHaveLength(1);
      release.resolve();

      expect((await request).status).toBe(201);
      expect(await labelsOf(ORDERS, 'label', '%')).toEqual(['held', 'outside/a', 'outside/b']);
    });

    it('lets @NoTransaction() routes use plain repositories, several connections at once', async () => {
      const response = await postJson(`${ctx.testApp.url}/safe/no-transaction`, { label: 'plain' });

      expect(response).toEqual({ status: 201, body: 1 });
      expect(await labelsOf(ORDERS, 'label', 'plain/%')).toEqual(['plain/a', 'plain/b']);
    });

    it('lets afterCommit and afterRollback hooks use plain repositories', async () => {
      const committed = await postJson(`${ctx.testApp.url}/safe/after-commit`, { label: 'kept' });
      const refused = await postJson(`${ctx.testApp.url}/safe/after-rollback`, { label: 'refused' });

      expect(committed).toEqual({ status: 201, body: { ok: true } });
      expect(refused.status).toBe(409);
      expect(await labelsOf(ORDERS, 'label', '%e%')).toEqual(['kept']);
      expect(await labelsOf(AUDIT, 'label', '%')).toEqual(['committed kept', 'rolled back refused']);
    });

    it("lets tx.save() with cascades run TypeORM's own queries on the unit's connection", async () => {
      const response = await postJson<{ id: number }>(`${ctx.testApp.url}/safe/cascade`, {
        label: 'cascaded',
        lines: ['a', 'b', 'c'],
      });

      expect(response.status).toBe(201);
      const orderId = engine.name === 'postgres' ? '"orderId"' : 'orderId';
      const lines = await db.query<{ label: string }>(q(`SELECT label FROM ${LINES} WHERE ${orderId} = $1 ORDER BY label`), [
        response.body.id,
      ]);
      expect(lines.map((l) => l.label)).toEqual(['cascaded/a', 'cascaded/b', 'cascaded/c']);
    });

    it('lets relations load on the unit of work: joined, by separate query, counted and lazy', async () => {
      const response = await postJson(`${ctx.testApp.url}/safe/relations`, { label: 'related' });

      expect(response).toEqual({ status: 201, body: { joined: 2, separate: 2, count: 1, lazy: 'related' } });
      expect(await labelsOf(LINES, 'label', 'related/r-%')).toEqual(['related/r-1', 'related/r-2']);
    });

    it('lets tx.transaction() nest savepoints on the same connection', async () => {
      const response = await postJson(`${ctx.testApp.url}/safe/savepoints`, { label: 'sp' });

      expect(response).toEqual({ status: 201, body: { ok: true } });
      expect(await labelsOf(ORDERS, 'label', 'sp/%')).toEqual(['sp/first', 'sp/outer']);
    });
  });
});
