import { AsyncLocalStorage } from 'node:async_hooks';
import type { AddressInfo } from 'node:net';
import {
  Body,
  ConsoleLogger,
  type CallHandler,
  Controller,
  type DynamicModule,
  type ExecutionContext,
  Get,
  HttpCode,
  type INestApplication,
  Injectable,
  type MiddlewareConsumer,
  Module,
  type NestMiddleware,
  type NestModule,
  type NestInterceptor,
  Post,
  type Provider,
  Query,
  type Type,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, type EntityManager, type Logger as TypeOrmLogger, type QueryRunner } from 'typeorm';
import { Account, entities, Transfer } from './entities';
import { loadLibrary } from './library';
import { perControllerControllers } from './per-controller';
import type { RunningServer, TracedStatement } from './protocol';
import { handRealisticController, moduleRealisticController, realisticProviders } from './realistic';
import { balances, reposOf, transfer, type TransferDto } from './units';
import { type AdapterName, IDLE_ACCOUNTING_OFF, type Variant } from './variants';

export interface BenchAppOptions {
  variant: Variant;
  adapter: AdapterName;
  databaseUrl: string;
  poolSize: number;
  /** PostgreSQL `synchronous_commit` of the pooled connections. Default: 'off'. */
  synchronousCommit?: string;
  /** Records every statement TypeORM runs, with its query runner (the runner's preflight check); never while measuring. */
  traceSql?: boolean;
}

/** How long an idle pooled connection of a bench server stays open. */
export const IDLE_CONNECTION_MS = 2000;

/** Data source options shared by every variant (and the runner's seeding). */
export function dataSourceOptions(databaseUrl: string, poolSize: number, synchronousCommit = 'off') {
  const postgres = /^postgres(ql)?:/.test(databaseUrl);
  return {
    type: postgres ? ('postgres' as const) : ('mariadb' as const),
    url: databaseUrl,
    poolSize,
    connectTimeoutMS: 5000,
    entities,
    synchronize: false,
    logging: false,
    // A pool closes its connections 2 s after its server's last run: the dozen servers of an adapter
    // would otherwise hold more connections than PostgreSQL's default max_connections (100). The warm-up
    // before each measured run opens them again, so no measured run reconnects.
    // synchronous_commit=off by default: with a disk flush per COMMIT the run measures the disk, and
    // the libraries' CPU cost (what the bench is for) disappears in its wait. BENCH_SYNC_COMMIT=on.
    extra: postgres ? { idleTimeoutMillis: IDLE_CONNECTION_MS, options: `-c synchronous_commit=${synchronousCommit}` } : {},
  };
}

/**
 * The statements TypeORM ran since the last call, each with a number per query runner: the runner's
 * preflight checks with it that every variant runs a request's statements in one transaction on one
 * connection. The module sends BEGIN/COMMIT on the driver connection and logs them here too.
 */
const traced: TracedStatement[] = [];
const runnerIds = new WeakMap<QueryRunner, number>();
let runnerCount = 0;
export function takeTrace(): TracedStatement[] {
  return traced.splice(0, traced.length);
}
const traceLogger: TypeOrmLogger = {
  logQuery(query: string, _parameters?: unknown[], queryRunner?: QueryRunner) {
    let runner = 0;
    if (queryRunner) {
      runner = runnerIds.get(queryRunner) ?? ++runnerCount;
      runnerIds.set(queryRunner, runner);
    }
    traced.push({ runner, sql: query.replace(/\s+/g, ' ').slice(0, 60) });
  },
  logQueryError() {},
  logQuerySlow() {},
  logSchemaBuild() {},
  logMigration() {},
  log() {},
};

/** By hand: one QueryRunner per request, as the TypeORM docs show it. No TransactionalModule at all. */
async function inQueryRunner<T>(dataSource: DataSource, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
  const qr = dataSource.createQueryRunner();
  await qr.connect();
  await qr.startTransaction();
  try {
    const result = await fn(qr.manager);
    await qr.commitTransaction();
    return result;
  } catch (error) {
    await qr.rollbackTransaction();
    throw error;
  } finally {
    await qr.release();
  }
}

@Controller()
class HandwrittenController {
  constructor(private readonly dataSource: DataSource) {}

  @Post('transfer')
  @HttpCode(200)
  transfer(@Body() dto: TransferDto): Promise<{ id: number }> {
    return inQueryRunner(this.dataSource, (manager) => transfer(reposOf(manager), dto));
  }

  @Get('balances')
  balances(@Query('from') from: string, @Query('to') to: string): Promise<unknown> {
    return inQueryRunner(this.dataSource, (manager) => balances(reposOf(manager), from, to));
  }

  @Get('ping')
  ping(): { ok: boolean } {
    return { ok: true };
  }
}

const requestContext = new AsyncLocalStorage<{ startedAt: number }>();

/**
 * `handwritten` with each handler's work inside `AsyncLocalStorage.run()`, and nothing else around
 * it: what propagating a context costs by itself, the floor of any library that needs one.
 */
@Controller()
class HandAlsHandlerController {
  constructor(private readonly dataSource: DataSource) {}

  @Post('transfer')
  @HttpCode(200)
  transfer(@Body() dto: TransferDto): Promise<{ id: number }> {
    return requestContext.run({ startedAt: 0 }, () =>
      inQueryRunner(this.dataSource, (manager) => transfer(reposOf(manager), dto)),
    );
  }

  @Get('balances')
  balances(@Query('from') from: string, @Query('to') to: string): Promise<unknown> {
    return requestContext.run({ startedAt: 0 }, () =>
      inQueryRunner(this.dataSource, (manager) => balances(reposOf(manager), from, to)),
    );
  }

  @Get('ping')
  ping(): { ok: boolean } {
    return requestContext.run({ startedAt: 0 }, () => ({ ok: true }));
  }
}

@Injectable()
class NoopInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle();
  }
}

@Injectable()
class AlsInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return new Observable((subscriber) =>
      requestContext.run({ startedAt: Date.now() }, () => next.handle().subscribe(subscriber)),
    );
  }
}

/** The rest of the request (guards, pipes, handler) inside `AsyncLocalStorage.run()`: no interceptor. */
@Injectable()
class AlsMiddleware implements NestMiddleware {
  use(_request: unknown, _response: unknown, next: () => void): void {
    requestContext.run({ startedAt: Date.now() }, next);
  }
}

@Module({})
class AlsBenchModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(AlsMiddleware).forRoutes('*');
  }
}

/**
 * With the module: the handler gets the request transaction's manager from `@Tx()`; the `-guard-off`
 * routes are the same with `@Transactional({ guard: 'off' })` (variant `module-throw-route-off`).
 */
function moduleController(): Type {
  const { Tx, Transactional } = loadLibrary();

  @Controller()
  class ModuleController {
    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(reposOf(tx), dto);
    }

    @Get('balances')
    balances(@Query('from') from: string, @Query('to') to: string, @Tx() tx: EntityManager): Promise<unknown> {
      return balances(reposOf(tx), from, to);
    }

    @Get('ping')
    ping(): { ok: boolean } {
      return { ok: true };
    }

    @Post('transfer-guard-off')
    @HttpCode(200)
    @Transactional({ guard: 'off' })
    transferGuardOff(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(reposOf(tx), dto);
    }

    @Get('balances-guard-off')
    @Transactional({ guard: 'off' })
    balancesGuardOff(@Query('from') from: string, @Query('to') to: string, @Tx() tx: EntityManager): Promise<unknown> {
      return balances(reposOf(tx), from, to);
    }
  }
  return ModuleController;
}

@Module({})
class BenchModule {}

/** The `forRoot()` options of `module-idle-off`: BENCH_IDLE_OFF_OPTIONS (JSON), else IDLE_ACCOUNTING_OFF. */
function idleAccountingOff(): Record<string, unknown> {
  const fromEnv = process.env.BENCH_IDLE_OFF_OPTIONS;
  const options = fromEnv ? (JSON.parse(fromEnv) as Record<string, unknown>) : IDLE_ACCOUNTING_OFF;
  if (options === undefined) {
    throw new Error(
      'module-idle-off: no forRoot() options known that turn the idle-in-transaction accounting off. Set IDLE_ACCOUNTING_OFF in bench/variants.ts (or BENCH_IDLE_OFF_OPTIONS=\'{"option":value}\') once the module has that option.',
    );
  }
  return options;
}

async function rootModule(options: BenchAppOptions): Promise<DynamicModule> {
  const typeOrmOptions = {
    ...dataSourceOptions(options.databaseUrl, options.poolSize, options.synchronousCommit),
    ...(options.traceSql ? { logging: true, logger: traceLogger } : {}),
  } as TypeOrmModuleOptions;
  switch (options.variant) {
    case 'hand-als-handler':
      return { module: BenchModule, imports: [TypeOrmModule.forRoot(typeOrmOptions)], controllers: [HandAlsHandlerController] };
    case 'hand-als':
      return { module: AlsBenchModule, imports: [TypeOrmModule.forRoot(typeOrmOptions)], controllers: [HandwrittenController] };
    case 'handwritten':
    case 'hand-interceptor':
    case 'hand-interceptor-als': {
      const providers: Provider[] =
        options.variant === 'handwritten'
          ? []
          : [{ provide: APP_INTERCEPTOR, useClass: options.variant === 'hand-interceptor' ? NoopInterceptor : AlsInterceptor }];
      return {
        module: BenchModule,
        imports: [TypeOrmModule.forRoot(typeOrmOptions)],
        controllers: [HandwrittenController],
        providers,
      };
    }
    case 'hand-realistic':
      return {
        module: BenchModule,
        imports: [TypeOrmModule.forRoot(typeOrmOptions)],
        controllers: [handRealisticController(inQueryRunner)],
        providers: realisticProviders,
      };
    case 'module-off':
    case 'module-throw':
    case 'module-idle-off':
    case 'module-realistic':
    case 'module-per-controller': {
      const { TransactionalModule } = loadLibrary();
      const variant = options.variant;
      const moduleOptions = {
        guard: variant === 'module-off' ? ('off' as const) : ('throw' as const),
        ...(variant === 'module-per-controller' ? { mount: false } : {}),
        ...(variant === 'module-idle-off' ? idleAccountingOff() : {}),
      };
      return {
        module: BenchModule,
        imports: [
          TypeOrmModule.forRoot(typeOrmOptions),
          TransactionalModule.forRoot(moduleOptions),
          TransactionalModule.forFeature([Account, Transfer]),
        ],
        controllers:
          variant === 'module-realistic'
            ? [moduleRealisticController()]
            : variant === 'module-per-controller'
              ? perControllerControllers()
              : [moduleController()],
        providers: variant === 'module-realistic' ? realisticProviders : [],
      };
    }
    case 'typeorm-transactional':
    case 'typeorm-transactional-cls-hooked': {
      // Loaded here, not at the top: it patches TypeORM when initialised, and only this variant's process may load it.
      const peer = await import('./peer-typeorm-transactional');
      return peer.typeormTransactionalModule(
        typeOrmOptions,
        options.variant === 'typeorm-transactional-cls-hooked' ? 'cls-hooked' : 'als',
      );
    }
    case 'nestjs-cls-transactional':
    case 'nestjs-cls-no-middleware': {
      const peer = await import('./peer-nestjs-cls');
      return peer.nestjsClsModule(typeOrmOptions, { middleware: options.variant === 'nestjs-cls-transactional' });
    }
    case 'gql-handwritten':
    case 'gql-module':
      // Loaded here: only the GraphQL variants' processes load @nestjs/graphql and its drivers.
      return (await import('./graphql')).graphQLBenchModule(options.variant, options.adapter, typeOrmOptions);
    case 'gql-nestjs-cls':
      return (await import('./graphql-nestjs-cls')).nestjsClsGraphQLModule(options.adapter, typeOrmOptions);
    case 'module-throw-route-off':
    case 'raw-pg':
      throw new Error(`${options.variant} is not a Nest app of its own (see variants.ts)`);
  }
}

/**
 * Prints the first error or warning of each kind and counts the rest. Every run ends with up to
 * `connections` requests cut off by autocannon; with the module each of them is rolled back and logged
 * by Nest's exception handler: thousands of stack traces, written while the next variant is measured.
 */
export class CountingLogger extends ConsoleLogger {
  readonly counts = new Map<string, number>();

  constructor() {
    super('bench', { logLevels: ['error', 'warn'] });
  }

  override error(message: unknown, ...rest: unknown[]): void {
    if (this.first('error', message)) super.error(message, ...(rest as [string?, string?]));
  }

  override warn(message: unknown, ...rest: unknown[]): void {
    if (this.first('warn', message)) super.warn(message, ...(rest as [string?]));
  }

  get total(): number {
    let n = 0;
    for (const count of this.counts.values()) n += count;
    return n;
  }

  private first(level: string, message: unknown): boolean {
    const text = message instanceof Error ? `${message.name}: ${message.message}` : String(message);
    const key = `${level} ${text.split('\n')[0].slice(0, 100)}`;
    const count = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, count);
    return count === 1;
  }
}

/** Builds and initialises the app of one variant on one adapter (not listening yet). */
export async function createBenchApp(options: BenchAppOptions, logger = new CountingLogger()): Promise<INestApplication> {
  const appOptions = { logger };
  const root = await rootModule(options);
  const app =
    options.adapter === 'fastify'
      ? await NestFactory.create(root, new FastifyAdapter(), appOptions)
      : await NestFactory.create(root, appOptions);
  await app.init();
  return app;
}

/** Starts one Nest variant on 127.0.0.1, with the pool counters the runner's leak check reads. */
export async function startNestServer(options: BenchAppOptions, port: number): Promise<RunningServer> {
  const logger = new CountingLogger();
  const app = await createBenchApp(options, logger);
  await app.listen(port, '127.0.0.1');
  const { port: actual } = app.getHttpServer().address() as AddressInfo;
  // Query runners still connected and pool counters (node-postgres pool).
  const driver = app.get(DataSource).driver as unknown as {
    connectedQueryRunners?: unknown[];
    master?: { totalCount: number; idleCount: number; waitingCount: number };
  };
  const stats = () => ({
    connectedQueryRunners: driver.connectedQueryRunners?.length,
    poolTotal: driver.master?.totalCount,
    poolIdle: driver.master?.idleCount,
    poolWaiting: driver.master?.waitingCount,
    loggedErrors: logger.total,
    logged: Object.fromEntries(logger.counts),
  });
  return {
    port: actual,
    stats,
    busy: () => {
      const s = stats();
      return (s.connectedQueryRunners ?? 0) > 0 || (s.poolWaiting ?? 0) > 0 || (s.poolTotal ?? 0) !== (s.poolIdle ?? 0);
    },
    close: () => app.close(),
  };
}
