/**
 * How the module hooks into Nest: every HTTP route handler of a controller instance is replaced, at
 * bootstrap, by a wrapper that runs it in its unit of work. The wrapper must be invisible to the rest
 * of Nest (guards, interceptors, metadata, the handler's arguments), work for request-scoped
 * controllers, leave other applications built from the same classes alone, and roll back when an
 * interceptor cuts the response stream. Pipes and interceptors run outside the unit of work.
 */
import {
  type CallHandler,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  Header,
  HttpCode,
  Injectable,
  type NestInterceptor,
  Optional,
  type PipeTransform,
  Post,
  Query,
  Req,
  RequestTimeoutException,
  Scope,
  SetMetadata,
  UseGuards,
  UseInterceptors,
  UsePipes,
  Version,
  VersioningType,
} from '@nestjs/common';
import { RouteConfig } from '@nestjs/platform-fastify';
import { Reflector } from '@nestjs/core';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { from, map, mergeMap, type Observable, race, tap, throwError } from 'rxjs';
import { Column, DataSource, Entity, EntityManager, PrimaryGeneratedColumn } from 'typeorm';
import { TransactionalModule, TransactionHost, Tx, type UnitOfWorkInfo } from '../../lib';
import { adapters, createApp, type TestApp } from '../support/app';
import { engines, typeormOptions } from '../support/databases';
import { call } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { observer, type MariadbObserver, type PostgresObserver, waitFor } from '../support/observer';
import { labelsIn } from './runner-fixtures';

const TABLE = 'route_wrapping_items';

@Entity(TABLE)
class WrappingItem {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;
}

const ROLE = 'route-wrapping:role';

/** What the current test saw; reset before each test. */
interface Probe {
  guardSawRole?: string;
  guardSawHandlerName?: string;
  inPipe?: UnitOfWorkInfo | null;
  beforeHandler?: UnitOfWorkInfo | null;
  inHandler?: UnitOfWorkInfo | null;
  afterHandler?: UnitOfWorkInfo | null;
  inserted: Latch;
  release: Latch;
  cut: Latch;
}

const freshProbe = (): Probe => ({ inserted: latch(), release: latch(), cut: latch() });
let probe = freshProbe();
/** `TransactionHost` of the application under test, for the pipe (pipes are built by `new`). */
let currentHost: TransactionHost | undefined;

@Injectable()
class RoleGuard implements CanActivate {
  constructor(private readonly reflector: Reflector) {}

  canActivate(context: ExecutionContext): boolean {
    const role = this.reflector.get<string>(ROLE, context.getHandler());
    probe.guardSawRole = role;
    probe.guardSawHandlerName = context.getHandler().name;
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    return request.headers['x-role'] === role;
  }
}

@Injectable()
class WrapInterceptor implements NestInterceptor {
  constructor(private readonly host: TransactionHost) {}

  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    probe.beforeHandler = this.host.current() ?? null;
    return next.handle().pipe(
      tap(() => {
        probe.afterHandler = this.host.current() ?? null;
      }),
      map((value) => ({ wrapped: value })),
    );
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

/** Lets the request wait a turn of the event loop: Nest awaits it before the handler runs. */
@Injectable()
class SlowGuard implements CanActivate {
  async canActivate(): Promise<boolean> {
    await new Promise((resolve) => setImmediate(resolve));
    return true;
  }
}

class SlowPipe implements PipeTransform {
  async transform(value: unknown): Promise<unknown> {
    await new Promise((resolve) => setImmediate(resolve));
    return value;
  }
}

class RecordingPipe implements PipeTransform {
  transform(value: unknown): unknown {
    probe.inPipe = currentHost?.current() ?? null;
    return value;
  }
}

@Controller('wrapping')
class WrappingController {
  constructor(private readonly host: TransactionHost) {}

  @Post('guarded')
  @SetMetadata(ROLE, 'admin')
  @UseGuards(RoleGuard)
  @UseInterceptors(WrapInterceptor)
  @HttpCode(202)
  @Header('x-wrapped', 'yes')
  async guarded(@Tx() tx: EntityManager) {
    probe.inHandler = this.host.current() ?? null;
    await tx.insert(WrappingItem, { label: 'guarded' });
    return { ok: true };
  }

  @Get('arguments')
  @UsePipes(RecordingPipe)
  async args(@Query('q') q: string, @Tx() tx: EntityManager) {
    // eslint-disable-next-line prefer-rest-params
    const count = arguments.length;
    probe.inHandler = this.host.current() ?? null;
    return { count, q, manager: tx instanceof EntityManager, open: await tx.query('SELECT 1 AS one').then(() => true) };
  }

  /** No `@Tx()`, and Nest awaits a guard and a pipe before the handler runs. */
  @Post('slow')
  @UseGuards(SlowGuard)
  async slow(@Query('label', SlowPipe) label: string) {
    await this.host.manager().insert(WrappingItem, { label });
    probe.inserted.resolve();
    await probe.release.promise;
    return { ok: true };
  }

  /** Called by the test itself, not over HTTP. */
  @Post('direct')
  async direct(label: string) {
    await this.host.manager().insert(WrappingItem, { label });
    return { unitOfWork: this.host.current()?.name ?? null };
  }

  @Post('cut')
  @UseInterceptors(CutInterceptor)
  async cut(@Tx() tx: EntityManager) {
    await tx.insert(WrappingItem, { label: 'cut' });
    probe.inserted.resolve();
    await probe.release.promise;
    return { ok: true };
  }

  @Post('cut-stream')
  @UseInterceptors(CutInterceptor)
  cutStream(@Tx() tx: EntityManager): Observable<unknown> {
    return from(
      (async () => {
        await tx.insert(WrappingItem, { label: 'cut-stream' });
        probe.inserted.resolve();
        await probe.release.promise;
        return { ok: true };
      })(),
    );
  }
}

let constructed = 0;

@Controller({ path: 'scoped', scope: Scope.REQUEST })
class ScopedController {
  readonly serial = ++constructed;

  /** Optional: the class also serves an application without the module. */
  constructor(@Optional() private readonly host?: TransactionHost) {}

  @Post()
  async create(@Tx() tx: EntityManager, @Query('label') label: string) {
    await tx.insert(WrappingItem, { label });
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

describe.each(engines)('route wrapping on $name', (engine) => {
  let db: PostgresObserver | MariadbObserver;

  beforeAll(async () => {
    db = await observer(engine);
  });

  afterAll(async () => {
    await db?.close();
  });

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `route-wrapping-e2e-${engine.name}-${adapter}`;
    let testApp: TestApp;
    let dataSource: DataSource;
    let host: TransactionHost;

    beforeAll(async () => {
      testApp = await createApp({
        adapter,
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [WrappingItem] })),
          TransactionalModule.forRoot(),
        ],
        controllers: [WrappingController, ScopedController, SharedController, VersionedController],
        providers: [RoleGuard, WrapInterceptor, CutInterceptor, SlowGuard],
        configure: (app) => app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' }),
      });
      dataSource = testApp.app.get<DataSource>(getDataSourceToken());
      host = testApp.app.get(TransactionHost);
      await db.query(`DELETE FROM ${TABLE}`);
    });

    beforeEach(() => {
      probe = freshProbe();
      currentHost = host;
    });

    afterEach(async () => {
      probe.release.resolve();
      await expectNothingLeaked({ dataSource, db, applicationName });
      await db.query(`DELETE FROM ${TABLE}`);
    });

    afterAll(async () => {
      await testApp?.close();
    });

    it('keeps the handler’s guards, interceptors, metadata, status code and headers', async () => {
      const refused = await fetch(`${testApp.url}/wrapping/guarded`, { method: 'POST', headers: { 'x-role': 'user' } });
      expect(refused.status).toBe(403);
      expect(probe.guardSawRole).toBe('admin');
      expect(probe.guardSawHandlerName).toBe('guarded');
      expect(await labelsIn(db, TABLE)).toEqual([]);

      const response = await fetch(`${testApp.url}/wrapping/guarded`, { method: 'POST', headers: { 'x-role': 'admin' } });
      expect(response.status).toBe(202);
      expect(response.headers.get('x-wrapped')).toBe('yes');
      expect(await response.json()).toEqual({ wrapped: { ok: true } });
      expect(await labelsIn(db, TABLE)).toEqual(['guarded']);
    });

    it('runs interceptors and pipes outside the unit of work, the handler inside it', async () => {
      await fetch(`${testApp.url}/wrapping/guarded`, { method: 'POST', headers: { 'x-role': 'admin' } });
      expect(probe.beforeHandler).toBeNull();
      expect(probe.afterHandler).toBeNull();
      expect(probe.inHandler).toEqual({ name: expect.stringMatching(/^POST \/wrapping\/guarded$/), state: 'open' });

      await call('GET', `${testApp.url}/wrapping/arguments?q=x`);
      expect(probe.inPipe).toBeNull();
      expect(probe.inHandler).toEqual({ name: 'GET /wrapping/arguments', state: 'open' });
    });

    it('passes the handler its own arguments only, with the unit of work’s manager for @Tx()', async () => {
      const reply = await call('GET', `${testApp.url}/wrapping/arguments?q=hello`);
      expect(reply).toEqual({ status: 200, body: { count: 2, q: 'hello', manager: true, open: true } });
    });

    it.each([
      ['a handler that returns a promise', 'cut'],
      ['a handler that returns an Observable', 'cut-stream'],
    ])('rolls back when an interceptor cuts the response stream of %s, and never commits after', async (_, route) => {
      const before = host.stats();
      const response = call('POST', `${testApp.url}/wrapping/${route}`);
      await probe.inserted.promise;
      probe.cut.resolve();
      expect(await response).toEqual({ status: 408, body: expect.objectContaining({ message: 'cut' }) });
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));

      // The handler finishes after the error went out: nothing of it is committed.
      probe.release.resolve();
      await expectNothingLeaked({ dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('sees a client disconnect on a route whose guard and pipe Nest awaited, without @Tx() or @Res()', async () => {
      const before = host.stats();
      const client = new AbortController();
      const request = fetch(`${testApp.url}/wrapping/slow?label=slow`, { method: 'POST', signal: client.signal }).catch(
        () => 'aborted',
      );
      await probe.inserted.promise;
      client.abort();
      expect(await request).toBe('aborted');
      // Rolled back and released while the handler still waits.
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));
      expect(host.stats().connectionsHeld).toBe(0);
      probe.release.resolve();
      await expectNothingLeaked({ dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('gives a handler called without HTTP a unit of work of its own, named after the method', async () => {
      const controller = testApp.app.get(WrappingController);
      expect(await controller.direct('direct')).toEqual({ unitOfWork: 'WrappingController.direct()' });
      expect(await labelsIn(db, TABLE)).toEqual(['direct']);
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

    it('wraps request-scoped controllers: a new instance per request, each in its unit of work', async () => {
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
});
