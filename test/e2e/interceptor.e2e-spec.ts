/**
 * The hook is `TransactionInterceptor`, a Nest interceptor: middleware and guards run before the unit
 * of work opens; the interceptors bound after it, the pipes and the handler inside it; COMMIT comes
 * when the handler's stream completes, before the value goes out; exception filters see the error
 * after ROLLBACK. `forRoot()` binds it globally; with `mount: false` the application places it.
 */
import {
  type ArgumentsHost,
  type CallHandler,
  type CanActivate,
  Catch,
  ClassSerializerInterceptor,
  ConflictException,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  Get,
  Header,
  HttpCode,
  HttpException,
  type INestApplication,
  Injectable,
  Module,
  type NestInterceptor,
  Optional,
  type PipeTransform,
  Post,
  Query,
  Req,
  RequestTimeoutException,
  Scope,
  SetMetadata,
  UseFilters,
  UseGuards,
  UseInterceptors,
  Version,
  VersioningType,
} from '@nestjs/common';
import { APP_INTERCEPTOR, Reflector } from '@nestjs/core';
import { RouteConfig } from '@nestjs/platform-fastify';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { from, map, mergeMap, type Observable, race, tap, throwError } from 'rxjs';
import { DataSource, EntityManager, type Logger as TypeormLogger } from 'typeorm';
import {
  NoTransactionError,
  Transactional,
  TransactionalModule,
  TransactionHost,
  TransactionInterceptor,
  TransactionRunner,
  Tx,
  type UnitOfWorkInfo,
} from '../../lib';
import { type AdapterName, adapters, createApp } from '../support/app';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { OwnedItem, Owner, tableOf } from '../support/entities';
import { call } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { waitFor } from '../support/observer';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(OwnedItem);
const OWNERS = tableOf(Owner);

const ROLE = 'interceptor:role';

/**
 * What the participants of a request saw, in order: each step with the state of the unit of work it
 * ran in (`outside` when none), and the transaction statements the data source sent.
 */
let steps: string[] = [];
/** `TransactionHost` of the application under test, for participants Nest builds with `new`. */
let currentHost: TransactionHost | undefined;

function step(name: string): void {
  steps.push(`${name}: ${currentHost?.current()?.state ?? 'outside'}`);
}

/** Records BEGIN, INSERT, SELECT, COMMIT and ROLLBACK among the steps. */
class StepLogger implements TypeormLogger {
  logQuery(query: string): void {
    const statement = /^\s*(BEGIN|START TRANSACTION|COMMIT|ROLLBACK|INSERT|SELECT)/i.exec(query)?.[1]?.toUpperCase();
    if (statement !== undefined) steps.push(`sql ${statement === 'START TRANSACTION' ? 'BEGIN' : statement}`);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** What the current test saw, and the latches it holds handlers with; reset before each test. */
interface Probe {
  guardSawRole?: string;
  guardSawHandlerName?: string;
  inHandler?: UnitOfWorkInfo | null;
  inserted: Latch;
  release: Latch;
  cut: Latch;
  pipeRuns: number;
  handlerRuns: number;
}

const freshProbe = (): Probe => ({ inserted: latch(), release: latch(), cut: latch(), pipeRuns: 0, handlerRuns: 0 });
let probe = freshProbe();

@Injectable()
class RoleGuard implements CanActivate {
  constructor(private readonly reflector: Reflector) {}

  canActivate(context: ExecutionContext): boolean {
    step('guard');
    const role = this.reflector.get<string>(ROLE, context.getHandler());
    probe.guardSawRole = role;
    probe.guardSawHandlerName = context.getHandler().name;
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    return role === undefined || request.headers['x-role'] === role;
  }
}

/** Records where it runs, before the handler and on its value. */
class RecordingInterceptor implements NestInterceptor {
  constructor(private readonly name: string) {}

  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    step(`${this.name}, before`);
    return next.handle().pipe(tap(() => step(`${this.name}, after`)));
  }
}

@Injectable()
class RootModuleInterceptor extends RecordingInterceptor {
  constructor() {
    super('root module APP_INTERCEPTOR');
  }
}

@Injectable()
class FeatureModuleInterceptor extends RecordingInterceptor {
  constructor() {
    super('feature module APP_INTERCEPTOR');
  }
}

/** A module imported after TransactionalModule that binds a global interceptor. */
@Module({ providers: [{ provide: APP_INTERCEPTOR, useClass: FeatureModuleInterceptor }] })
class FeatureModule {}

/** Bound on the controller: records, and wraps the value. */
@Injectable()
class StepInterceptor extends RecordingInterceptor {
  constructor() {
    super('controller interceptor');
  }

  override intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return super.intercept(context, next).pipe(map((value) => ({ wrapped: value })));
  }
}

/** Cuts the response stream when the test says so: a timeout that fires on demand. */
@Injectable()
class CutInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return race(
      next.handle(),
      from(probe.cut.promise).pipe(mergeMap(() => throwError(() => new RequestTimeoutException('cut')))),
    );
  }
}

class StepPipe implements PipeTransform {
  transform(value: unknown): unknown {
    probe.pipeRuns += 1;
    step('pipe');
    return value;
  }
}

/** Lets the request wait a turn of the event loop: Nest awaits it before the handler runs. */
class SlowPipe implements PipeTransform {
  async transform(value: unknown): Promise<unknown> {
    await new Promise((resolve) => setImmediate(resolve));
    return value;
  }
}

@Catch(HttpException)
class StepFilter implements ExceptionFilter {
  catch(exception: HttpException, host: ArgumentsHost): void {
    step('filter');
    // Express's response and Fastify's reply both answer status().send().
    const reply = host.switchToHttp().getResponse<{ status(code: number): { send(body: unknown): void } }>();
    reply.status(exception.getStatus()).send({ message: exception.message });
  }
}

/** Answers every error with its class name, for the tests to read. */
@Catch()
class NamingFilter implements ExceptionFilter {
  catch(exception: Error, host: ArgumentsHost): void {
    const reply = host.switchToHttp().getResponse<{ status(code: number): { send(body: unknown): void } }>();
    const status = exception instanceof HttpException ? exception.getStatus() : 500;
    reply.status(status).send({ error: exception.constructor.name, message: exception.message });
  }
}

/** A database error the dialect calls retryable, raised by the database itself. */
function serializationFailureSql(engine: Engine): string {
  return engine.name === 'postgres'
    ? `DO $$ BEGIN RAISE EXCEPTION 'could not serialize (simulated)' USING ERRCODE = '40001'; END $$`
    : `SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found (simulated)'`;
}
let engineUnderTest: Engine;

@Controller('interceptor')
@UseInterceptors(StepInterceptor)
class InterceptorController {
  constructor(private readonly host: TransactionHost) {}

  @Post('order')
  @SetMetadata(ROLE, 'admin')
  @UseGuards(RoleGuard)
  @UseFilters(StepFilter)
  @HttpCode(202)
  @Header('x-intercepted', 'yes')
  async order(@Query('label', StepPipe) label: string, @Query('fail') fail: string | undefined, @Tx() tx: EntityManager) {
    step('handler');
    probe.inHandler = this.host.current() ?? null;
    await tx.insert(OwnedItem, { label });
    if (fail !== undefined) throw new ConflictException('the handler failed after its write');
    return { ok: true };
  }

  @Get('arguments')
  async args(@Query('q') q: string, @Tx() tx: EntityManager) {
    const count = arguments.length;
    return { count, q, manager: tx instanceof EntityManager, open: await tx.query('SELECT 1 AS one').then(() => true) };
  }

  /** Runs again after a retryable failure of its first attempt: the pipe must run again too. */
  @Post('retried')
  @Transactional({ retry: { attempts: 3, baseDelayMs: 0 } })
  async retried(@Query('label', StepPipe) label: string, @Tx() tx: EntityManager) {
    probe.handlerRuns += 1;
    await tx.insert(OwnedItem, { label: `${label}-${probe.handlerRuns}` });
    if (probe.handlerRuns === 1) await tx.query(serializationFailureSql(engineUnderTest));
    return { runs: probe.handlerRuns };
  }

  /** Calls another route handler of this controller. */
  @Post('with-sibling')
  async withSibling(@Query('label') label: string, @Query('fail') fail: string | undefined) {
    await this.host.manager().insert(OwnedItem, { label });
    const sibling = await this.sibling(`${label}-sibling`);
    if (fail !== undefined) throw new ConflictException('the handler failed after its sibling wrote');
    return { unitOfWork: this.host.current()?.name ?? null, sibling };
  }

  @Post('sibling')
  async sibling(@Query('label') label: string) {
    await this.host.manager().insert(OwnedItem, { label });
    return { unitOfWork: this.host.current()?.name ?? null };
  }

  /** No `@Tx()`, and Nest awaits a pipe before the handler runs. */
  @Post('slow')
  async slow(@Query('label', SlowPipe) label: string) {
    await this.host.manager().insert(OwnedItem, { label });
    probe.inserted.resolve();
    await probe.release.promise;
    return { ok: true };
  }

  @Post('cut')
  @UseInterceptors(CutInterceptor)
  async cut(@Tx() tx: EntityManager) {
    await tx.insert(OwnedItem, { label: 'cut' });
    probe.inserted.resolve();
    await probe.release.promise;
    return { ok: true };
  }

  @Post('cut-stream')
  @UseInterceptors(CutInterceptor)
  cutStream(@Tx() tx: EntityManager): Observable<unknown> {
    return from(
      (async () => {
        await tx.insert(OwnedItem, { label: 'cut-stream' });
        probe.inserted.resolve();
        await probe.release.promise;
        return { ok: true };
      })(),
    );
  }
}

/** Returns entities for a serializer; the lazy relation is read by it, not by the handler. */
abstract class ItemReader {
  @Get()
  async item(@Query('label') label: string, @Tx() tx: EntityManager): Promise<OwnedItem> {
    return tx.findOneByOrFail(OwnedItem, { label });
  }
}

/** With the serializer bound on the controller: inside the unit of work. */
@Controller('serialized')
@UseInterceptors(ClassSerializerInterceptor)
class SerializedController extends ItemReader {}

/** The same route with no serializer of its own: the application's global one serializes. */
@Controller('items')
class ItemsController extends ItemReader {}

let constructed = 0;

@Controller({ path: 'scoped', scope: Scope.REQUEST })
class ScopedController {
  readonly serial = ++constructed;

  /** Optional: the class also serves an application without the module. */
  constructor(@Optional() private readonly host?: TransactionHost) {}

  @Post()
  async create(@Tx() tx: EntityManager, @Query('label') label: string) {
    await tx.insert(OwnedItem, { label });
    return { serial: this.serial, unitOfWork: this.host?.current()?.name ?? null };
  }
}

/** Routes that Fastify registers with a version constraint and a route config. */
@Controller('versioned')
class VersionedController {
  constructor(private readonly host: TransactionHost) {}

  @Get()
  @Version('1')
  one() {
    return { version: 1, unitOfWork: this.host.current()?.name ?? null };
  }

  @Get()
  @Version('2')
  @RouteConfig({ flavour: 'two' })
  two(@Req() request: { routeOptions?: { config?: { flavour?: string } } }) {
    return { version: 2, unitOfWork: this.host.current()?.name ?? null, flavour: request.routeOptions?.config?.flavour ?? null };
  }
}

/** The same controller class in an application without the module. */
@Controller('plain')
class SharedController {
  @Get()
  probe(@Tx() tx: EntityManager) {
    return { manager: tx instanceof EntityManager };
  }
}

/** Bound per controller in an application that mounts no global interceptor. */
@Controller('bound')
@UseInterceptors(TransactionInterceptor)
class BoundController {
  constructor(private readonly host: TransactionHost) {}

  @Post()
  async create(@Query('label') label: string, @Tx() tx: EntityManager) {
    await tx.insert(OwnedItem, { label });
    return { unitOfWork: this.host.current()?.name ?? null };
  }
}

@Controller('unbound')
class UnboundController {
  constructor(private readonly host: TransactionHost) {}

  @Get()
  current() {
    return { unitOfWork: this.host.current()?.name ?? null };
  }

  @Get('tx')
  tx(@Tx() tx: EntityManager) {
    return { manager: tx instanceof EntityManager };
  }
}

/** Every HTTP request passes through it: it records the steps outside the unit of work. */
function stepMiddleware(_request: unknown, _response: unknown, next: () => void): void {
  step('middleware');
  next();
}

describe.each(engines)('TransactionInterceptor on $name', (engine) => {
  const db = suiteObserver(engine);
  /** The tables of the suite, children before parents, for {@link suiteApp}. */
  const tables = [OwnedItem, Owner];

  beforeAll(() => {
    engineUnderTest = engine;
  });

  /** Clears both tables, owners last (items refer to them): for the apps built per test. */
  async function clearTables(): Promise<void> {
    await db.query(`DELETE FROM ${TABLE}`);
    await db.query(`DELETE FROM ${OWNERS}`);
  }

  /** An item whose lazy relation points to an owner, written through the observer. */
  async function insertOwnedItem(label: string): Promise<void> {
    const [owner] = await db.query<{ id: number }>(`INSERT INTO ${OWNERS} (name) VALUES ('owner') RETURNING id`);
    const column = engine.name === 'postgres' ? '"ownerId"' : '`ownerId`';
    await db.query(`INSERT INTO ${TABLE} (label, ${column}) VALUES ('${label}', ${Number(owner.id)})`);
  }

  function database(applicationName: string, poolSize = 1) {
    return TypeOrmModule.forRoot(
      typeormOptions(engine, {
        poolSize,
        applicationName,
        entities: [OwnedItem, Owner],
        logger: new StepLogger(),
      }),
    );
  }

  describe.each(adapters)('mounted by forRoot(), over %s', (adapter: AdapterName) => {
    const applicationName = `interceptor-e2e-${engine.name}-${adapter}`;
    let host: TransactionHost;

    // Before the suite's leak check (hooks run in the order they are declared): no handler stays held.
    afterEach(() => {
      probe.release.resolve();
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables,
      app: () => ({
        adapter,
        imports: [database(applicationName), TransactionalModule.forRoot()],
        controllers: [
          InterceptorController,
          SerializedController,
          ScopedController,
          SharedController,
          VersionedController,
          BoundController,
        ],
        providers: [RoleGuard, CutInterceptor],
        configure: (app: INestApplication) => {
          app.use(stepMiddleware);
          // Applied after the APP_INTERCEPTOR providers of the modules: inside the unit of work.
          app.useGlobalInterceptors(new RecordingInterceptor('useGlobalInterceptors() interceptor'));
          app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
        },
      }),
    });

    beforeAll(() => {
      host = testApp.get(TransactionHost);
    });

    beforeEach(() => {
      probe = freshProbe();
      steps = [];
      currentHost = host;
    });

    it('runs middleware and guards outside, then interceptors, pipes and handler inside, and commits before the value goes out', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/order?label=ordered`, undefined, { 'x-role': 'admin' });
      expect(reply).toEqual({ status: 202, body: { wrapped: { ok: true } } });
      expect(steps).toEqual([
        'middleware: outside',
        'guard: outside',
        'useGlobalInterceptors() interceptor, before: open',
        'controller interceptor, before: open',
        'pipe: open',
        'handler: open',
        'sql BEGIN',
        'sql INSERT',
        'controller interceptor, after: open',
        'useGlobalInterceptors() interceptor, after: open',
        'sql COMMIT',
      ]);
      expect(probe.inHandler).toEqual({ name: 'POST /interceptor/order', state: 'open' });
      expect(await labelsIn(db, TABLE)).toEqual(['ordered']);
    });

    it('rolls back before the exception filter runs, and the filter runs outside the unit of work', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/order?label=failing&fail=1`, undefined, { 'x-role': 'admin' });
      expect(reply.status).toBe(409);
      expect(steps.slice(steps.indexOf('handler: open'))).toEqual([
        'handler: open',
        'sql BEGIN',
        'sql INSERT',
        'sql ROLLBACK',
        'filter: outside',
      ]);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('opens no unit of work for a request its guard refuses, and keeps metadata, status code and headers', async () => {
      const refused = await fetch(`${testApp.url}/interceptor/order?label=x`, { method: 'POST', headers: { 'x-role': 'user' } });
      expect(refused.status).toBe(403);
      expect(probe.guardSawRole).toBe('admin');
      expect(probe.guardSawHandlerName).toBe('order');
      // The filter sees the guard's refusal, outside as well.
      expect(steps).toEqual(['middleware: outside', 'guard: outside', 'filter: outside']);

      const response = await fetch(`${testApp.url}/interceptor/order?label=y`, {
        method: 'POST',
        headers: { 'x-role': 'admin' },
      });
      expect(response.status).toBe(202);
      expect(response.headers.get('x-intercepted')).toBe('yes');
      expect(await labelsIn(db, TABLE)).toEqual(['y']);
    });

    it('runs a controller that binds it again (besides the global binding) in one unit of work', async () => {
      const execute = jest.spyOn(TransactionRunner.prototype, 'execute');
      try {
        expect(await call('POST', `${testApp.url}/bound?label=twice`)).toEqual({
          status: 201,
          body: { unitOfWork: 'POST /bound' },
        });
        expect(execute).toHaveBeenCalledTimes(1);
      } finally {
        execute.mockRestore();
      }
      expect(steps.filter((s) => s.startsWith('sql '))).toEqual(['sql BEGIN', 'sql INSERT', 'sql COMMIT']);
      expect(await labelsIn(db, TABLE)).toEqual(['twice']);
    });

    it('passes the handler its own arguments only, with the unit of work’s manager for @Tx()', async () => {
      const reply = await call('GET', `${testApp.url}/interceptor/arguments?q=hello`);
      expect(reply).toEqual({ status: 200, body: { wrapped: { count: 2, q: 'hello', manager: true, open: true } } });
    });

    it('runs pipes, inner interceptors and the handler again on a retry, in a fresh transaction', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/retried?label=retried`);
      expect(reply).toEqual({ status: 201, body: { wrapped: { runs: 2 } } });
      expect(probe.pipeRuns).toBe(2);
      expect(steps.filter((s) => s.startsWith('controller interceptor, before'))).toHaveLength(2);
      expect(steps.filter((s) => s.startsWith('sql ') && !s.endsWith('INSERT') && !s.endsWith('SELECT'))).toEqual([
        'sql BEGIN',
        'sql ROLLBACK',
        'sql BEGIN',
        'sql COMMIT',
      ]);
      // The first attempt's write rolled back with it.
      expect(await labelsIn(db, TABLE)).toEqual(['retried-2']);
    });

    it('joins the unit of work when a handler calls another route handler of its controller: one connection', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/with-sibling?label=joined`);
      expect(reply).toEqual({
        status: 201,
        body: {
          wrapped: { unitOfWork: 'POST /interceptor/with-sibling', sibling: { unitOfWork: 'POST /interceptor/with-sibling' } },
        },
      });
      expect(steps.filter((s) => s === 'sql BEGIN')).toHaveLength(1);
      expect(await labelsIn(db, TABLE)).toEqual(['joined', 'joined-sibling']);
    });

    it.each([
      ['a handler that returns a promise', 'cut'],
      ['a handler that returns an Observable', 'cut-stream'],
    ])('rolls back when an interceptor inside it cuts the stream of %s, and never commits after', async (_, route) => {
      const before = host.stats();
      const response = call('POST', `${testApp.url}/interceptor/${route}`);
      await probe.inserted.promise;
      probe.cut.resolve();
      expect(await response).toEqual({ status: 408, body: expect.objectContaining({ message: 'cut' }) });
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));

      // The handler finishes after the error went out: nothing of it is committed.
      probe.release.resolve();
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('sees a client disconnect on a route whose pipe Nest awaited, without @Tx() or @Res()', async () => {
      const before = host.stats();
      const client = new AbortController();
      const request = fetch(`${testApp.url}/interceptor/slow?label=slow`, { method: 'POST', signal: client.signal }).catch(
        () => 'aborted',
      );
      await probe.inserted.promise;
      client.abort();
      expect(await request).toBe('aborted');
      // Rolled back and released while the handler still waits.
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));
      expect(host.stats().connectionsHeld).toBe(0);
      probe.release.resolve();
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('lets ClassSerializerInterceptor, bound inside it, load a lazy relation in the transaction', async () => {
      await insertOwnedItem('owned');
      steps = [];

      const reply = await call('GET', `${testApp.url}/serialized?label=owned`);
      expect(reply).toEqual({ status: 200, body: expect.objectContaining({ label: 'owned' }) });
      // The serializer's read of `owner` loaded it on the request's connection, before COMMIT.
      expect(steps.filter((s) => s.startsWith('sql '))).toEqual(['sql BEGIN', 'sql SELECT', 'sql SELECT', 'sql COMMIT']);
    });

    it('gives a handler called directly, without Nest’s pipeline, no unit of work; inside TransactionRunner.run() it joins that one', async () => {
      const controller = testApp.get(InterceptorController);
      await expect(controller.sibling('direct')).rejects.toBeInstanceOf(NoTransactionError);
      const runner = testApp.get(TransactionRunner);
      expect(await runner.run(() => controller.sibling('run'), { name: 'a test' })).toEqual({ unitOfWork: 'a test' });
      expect(await labelsIn(db, TABLE)).toEqual(['run']);
    });

    it('keeps what the HTTP adapter reads from a route handler: versions, and Fastify’s route config', async () => {
      const one = await call('GET', `${testApp.url}/versioned`, undefined, { 'x-api-version': '1' });
      const two = await call('GET', `${testApp.url}/versioned`, undefined, { 'x-api-version': '2' });
      expect(one).toEqual({ status: 200, body: { version: 1, unitOfWork: 'GET /versioned' } });
      expect(two).toEqual({
        status: 200,
        body: { version: 2, unitOfWork: 'GET /versioned', flavour: adapter === 'fastify' ? 'two' : null },
      });
    });

    it('serves request-scoped controllers: a new instance per request, each in its unit of work', async () => {
      const first = await call('POST', `${testApp.url}/scoped?label=one`);
      const second = await call('POST', `${testApp.url}/scoped?label=two`);
      expect(first).toEqual({ status: 201, body: { serial: expect.any(Number), unitOfWork: 'POST /scoped' } });
      expect(second.body.serial).not.toBe(first.body.serial);
      expect(await labelsIn(db, TABLE)).toEqual(['one', 'two']);
    });

    it('leaves applications without the module alone, though they share the controller classes', async () => {
      const plain = await createApp({ adapter, controllers: [SharedController, ScopedController] });
      try {
        // No unit of work there: @Tx() reports it.
        expect((await call('GET', `${plain.url}/plain`)).status).toBe(500);
        expect((await call('POST', `${plain.url}/scoped?label=plain`)).status).toBe(500);
        // And here the same class still works.
        expect(await call('GET', `${testApp.url}/plain`)).toEqual({ status: 200, body: { manager: true } });
        expect((await call('POST', `${testApp.url}/scoped?label=here`)).status).toBe(201);
        expect(await labelsIn(db, TABLE)).toEqual(['here']);
      } finally {
        await plain.close();
      }
    });
  });

  describe('a handler that calls a sibling route handler, on a pool of two', () => {
    const applicationName = `interceptor-e2e-${engine.name}-pool-2`;
    const testApp = suiteApp(db, {
      applicationName,
      tables,
      app: () => ({
        adapter: 'express',
        imports: [database(applicationName, 2), TransactionalModule.forRoot()],
        controllers: [InterceptorController],
      }),
    });

    beforeEach(() => {
      probe = freshProbe();
      steps = [];
      currentHost = testApp.get(TransactionHost);
    });

    it('rolls the sibling’s write back with the request when the request fails', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/with-sibling?label=failed&fail=1`);
      expect(reply.status).toBe(409);
      expect(await labelsIn(db, TABLE)).toEqual([]);
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
    });
  });

  describe.each(adapters)('with mount: false, over %s', (adapter: AdapterName) => {
    const applicationName = `interceptor-e2e-${engine.name}-unmounted-${adapter}`;
    const testApp = suiteApp(db, {
      applicationName,
      tables,
      app: () => ({
        adapter,
        imports: [database(applicationName), TransactionalModule.forRoot({ mount: false })],
        controllers: [BoundController, UnboundController, SerializedController],
      }),
    });

    beforeEach(() => {
      probe = freshProbe();
      steps = [];
      currentHost = testApp.get(TransactionHost);
    });

    it('binds no global interceptor: a controller without it gets no unit of work', async () => {
      expect(await call('GET', `${testApp.url}/unbound`)).toEqual({ status: 200, body: { unitOfWork: null } });
      expect((await call('GET', `${testApp.url}/unbound/tx`)).status).toBe(500);
    });

    it('runs the routes of a controller with @UseInterceptors(TransactionInterceptor) in a unit of work', async () => {
      const reply = await call('POST', `${testApp.url}/bound?label=bound`);
      expect(reply).toEqual({ status: 201, body: { unitOfWork: 'POST /bound' } });
      expect(steps).toEqual(['sql BEGIN', 'sql INSERT', 'sql COMMIT']);
      expect(await labelsIn(db, TABLE)).toEqual(['bound']);
    });
  });

  describe.each(adapters)('placed among the application’s own global interceptors, over %s', (adapter: AdapterName) => {
    const applicationName = `interceptor-e2e-${engine.name}-placed-${adapter}`;
    let host: TransactionHost;

    // Before the suite's leak check (hooks run in the order they are declared): no handler stays held.
    afterEach(() => {
      probe.release.resolve();
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables,
      app: () => ({
        adapter,
        imports: [database(applicationName), TransactionalModule.forRoot({ mount: false })],
        controllers: [InterceptorController, ItemsController],
        providers: [RoleGuard, CutInterceptor],
        configure: (app: INestApplication) => {
          // Outside it: a recorder, a timeout that cuts the stream, and a serializer (too late for lazy relations).
          app.useGlobalInterceptors(
            new RecordingInterceptor('outer interceptor'),
            new ClassSerializerInterceptor(app.get(Reflector)),
            app.get(CutInterceptor),
            app.get(TransactionInterceptor),
          );
          app.useGlobalFilters(new NamingFilter());
        },
      }),
    });

    beforeAll(() => {
      host = testApp.get(TransactionHost);
    });

    beforeEach(() => {
      probe = freshProbe();
      steps = [];
      currentHost = host;
    });

    it('runs the interceptors bound before it outside the unit of work, after COMMIT on the way out', async () => {
      const reply = await call('POST', `${testApp.url}/interceptor/order?label=placed`, undefined, { 'x-role': 'admin' });
      expect(reply.status).toBe(202);
      expect(steps).toEqual([
        'guard: outside',
        'outer interceptor, before: outside',
        'controller interceptor, before: open',
        'pipe: open',
        'handler: open',
        'sql BEGIN',
        'sql INSERT',
        'controller interceptor, after: open',
        'sql COMMIT',
        'outer interceptor, after: outside',
      ]);
    });

    it('rolls back at once when an interceptor bound before it cuts the stream (unsubscribes), and never commits after', async () => {
      const before = host.stats();
      const response = call('POST', `${testApp.url}/interceptor/slow?label=cut-outside`);
      await probe.inserted.promise;
      probe.cut.resolve();
      expect(await response).toEqual({ status: 408, body: expect.objectContaining({ message: 'cut' }) });
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));
      expect(host.stats().connectionsHeld).toBe(0);

      probe.release.resolve();
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('fails a ClassSerializerInterceptor bound before it that reads a lazy relation: the transaction has ended', async () => {
      await insertOwnedItem('late');
      const reply = await call('GET', `${testApp.url}/items?label=late`);
      expect(reply.status).toBe(500);
      expect(reply.body).toEqual({ error: 'TransactionFinishedError', message: expect.stringMatching(/committed/) });
    });
  });

  describe('bound with APP_INTERCEPTOR providers', () => {
    const applicationName = `interceptor-e2e-${engine.name}-providers`;

    beforeEach(async () => {
      probe = freshProbe();
      steps = [];
      await clearTables();
    });

    afterAll(async () => {
      await clearTables();
    });

    it('runs those of the root module before it, and those of modules imported after TransactionalModule inside it', async () => {
      const testApp = await createApp({
        adapter: 'express',
        imports: [database(applicationName), TransactionalModule.forRoot(), FeatureModule],
        controllers: [ItemsController],
        providers: [{ provide: APP_INTERCEPTOR, useClass: RootModuleInterceptor }],
      });
      try {
        currentHost = testApp.app.get(TransactionHost);
        await insertOwnedItem('ordered');
        steps = [];
        expect((await call('GET', `${testApp.url}/items?label=ordered`)).status).toBe(200);
        expect(steps.filter((s) => !s.startsWith('sql '))).toEqual([
          'root module APP_INTERCEPTOR, before: outside',
          'feature module APP_INTERCEPTOR, before: open',
          'feature module APP_INTERCEPTOR, after: open',
          'root module APP_INTERCEPTOR, after: outside',
        ]);
        await expectNothingLeaked({ dataSource: testApp.app.get<DataSource>(getDataSourceToken()), db, applicationName });
      } finally {
        await testApp.close();
      }
    });

    it('with mount: false, follows the order of the providers: TransactionInterceptor, then ClassSerializerInterceptor', async () => {
      const testApp = await createApp({
        adapter: 'express',
        imports: [database(applicationName), TransactionalModule.forRoot({ mount: false })],
        controllers: [ItemsController],
        providers: [
          { provide: APP_INTERCEPTOR, useExisting: TransactionInterceptor },
          { provide: APP_INTERCEPTOR, useClass: ClassSerializerInterceptor },
        ],
      });
      try {
        currentHost = testApp.app.get(TransactionHost);
        await insertOwnedItem('serialized');
        steps = [];
        expect(await call('GET', `${testApp.url}/items?label=serialized`)).toEqual({
          status: 200,
          body: expect.objectContaining({ label: 'serialized' }),
        });
        // The serializer's read of the lazy relation ran in the transaction, before COMMIT.
        expect(steps.filter((s) => s.startsWith('sql '))).toEqual(['sql BEGIN', 'sql SELECT', 'sql SELECT', 'sql COMMIT']);
        await expectNothingLeaked({ dataSource: testApp.app.get<DataSource>(getDataSourceToken()), db, applicationName });
      } finally {
        await testApp.close();
      }
    });
  });
});
