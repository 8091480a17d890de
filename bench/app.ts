import { AsyncLocalStorage } from 'node:async_hooks';
import {
  Body,
  ConsoleLogger,
  type CallHandler,
  Controller,
  type DynamicModule,
  type ExecutionContext,
  HttpCode,
  type INestApplication,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
  type Provider,
  type Type,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, type EntityManager } from 'typeorm';
import { Account, entities, Transfer } from './entities';
import { loadLibrary } from './library';

/** The bench's subjects: hand-written QueryRunner transaction vs the module with guard 'off' / 'throw'. */
export const VARIANTS = ['handwritten', 'module-off', 'module-throw'] as const;
/**
 * Opt-in diagnostics (BENCH_VARIANTS=...) that split the module's overhead into its ingredients:
 * `hand-interceptor` is `handwritten` plus a global no-op interceptor (Nest's interceptor pipeline);
 * `hand-interceptor-als` also runs the handler inside `AsyncLocalStorage.run()` (what any
 * context-propagating design pays; on Node 20 that turns on promise hooks for the whole process).
 */
export const DIAGNOSTIC_VARIANTS = ['hand-interceptor', 'hand-interceptor-als'] as const;
/**
 * The guard's own cost, measured without comparing two processes (whose JIT and core placement differ
 * by a few per cent): `module-throw-route-off` is a second route of the `module-throw` server itself,
 * `@Transactional({ guard: 'off' })`, loaded in turn with the default route. On by default.
 */
export const SAME_PROCESS_VARIANTS = ['module-throw-route-off'] as const;
export const ALL_VARIANTS = [...VARIANTS, ...DIAGNOSTIC_VARIANTS, ...SAME_PROCESS_VARIANTS] as const;
export type Variant = (typeof ALL_VARIANTS)[number];
export const ADAPTERS = ['express', 'fastify'] as const;
export type AdapterName = (typeof ADAPTERS)[number];

export interface BenchAppOptions {
  variant: Variant;
  adapter: AdapterName;
  databaseUrl: string;
  poolSize: number;
  /** PostgreSQL `synchronous_commit` of the pooled connections. Default: 'off'. */
  synchronousCommit?: string;
}

export interface TransferDto {
  from: number;
  to: number;
  amount: number;
}

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
    // Pooled connections stay open while another variant is measured: no reconnects inside a run.
    // synchronous_commit=off by default: with a disk flush per COMMIT the run measures the disk, and
    // the library's CPU cost (what the bench is for) disappears in its wait. BENCH_SYNC_COMMIT=on.
    extra: postgres ? { idleTimeoutMillis: 0, options: `-c synchronous_commit=${synchronousCommit}` } : {},
  };
}

/** The unit of work, the same in every variant: 3 statements through `manager`. */
export async function transfer(manager: EntityManager, dto: TransferDto): Promise<{ id: number }> {
  const from = Number(dto.from);
  const to = Number(dto.to);
  const amount = Number(dto.amount);
  await manager.getRepository(Account).decrement({ id: from }, 'balance', amount);
  await manager.getRepository(Account).increment({ id: to }, 'balance', amount);
  const result = await manager.getRepository(Transfer).insert({ fromId: from, toId: to, amount });
  return { id: result.identifiers[0].id as number };
}

/** By hand: one QueryRunner per request, as the TypeORM docs show it. No TransactionalModule at all. */
@Controller()
class HandwrittenController {
  constructor(private readonly dataSource: DataSource) {}

  @Post('transfer')
  @HttpCode(200)
  async transfer(@Body() dto: TransferDto): Promise<{ id: number }> {
    const qr = this.dataSource.createQueryRunner();
    await qr.connect();
    await qr.startTransaction();
    try {
      const result = await transfer(qr.manager, dto);
      await qr.commitTransaction();
      return result;
    } catch (error) {
      await qr.rollbackTransaction();
      throw error;
    } finally {
      await qr.release();
    }
  }
}

@Injectable()
class NoopInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle();
  }
}

const requestContext = new AsyncLocalStorage<{ startedAt: number }>();

@Injectable()
class AlsInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return new Observable((subscriber) =>
      requestContext.run({ startedAt: Date.now() }, () => next.handle().subscribe(subscriber)),
    );
  }
}

/** With the module: the handler gets the request transaction's manager from `@Tx()`. */
function moduleController(): Type {
  const { Tx, Transactional } = loadLibrary();

  @Controller()
  class ModuleController {
    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(tx, dto);
    }

    @Post('transfer-guard-off')
    @HttpCode(200)
    @Transactional({ guard: 'off' })
    transferGuardOff(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(tx, dto);
    }
  }
  return ModuleController;
}

@Module({})
class BenchModule {}

function rootModule(options: BenchAppOptions): DynamicModule {
  const imports: DynamicModule[] = [
    TypeOrmModule.forRoot(
      dataSourceOptions(options.databaseUrl, options.poolSize, options.synchronousCommit) as TypeOrmModuleOptions,
    ),
  ];
  if (options.variant === 'handwritten' || options.variant === 'hand-interceptor' || options.variant === 'hand-interceptor-als') {
    const providers: Provider[] =
      options.variant === 'handwritten'
        ? []
        : [{ provide: APP_INTERCEPTOR, useClass: options.variant === 'hand-interceptor' ? NoopInterceptor : AlsInterceptor }];
    return { module: BenchModule, imports, controllers: [HandwrittenController], providers };
  }
  const { TransactionalModule } = loadLibrary();
  imports.push(
    TransactionalModule.forRoot({ guard: options.variant === 'module-throw' ? 'throw' : 'off' }),
    TransactionalModule.forFeature([Account, Transfer]),
  );
  return { module: BenchModule, imports, controllers: [moduleController()] };
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
  const app =
    options.adapter === 'fastify'
      ? await NestFactory.create(rootModule(options), new FastifyAdapter(), appOptions)
      : await NestFactory.create(rootModule(options), appOptions);
  await app.init();
  return app;
}
