/**
 * The bug zoo: every second-connection bug of the seeds (/work/shared/seeds/) written as the real Nest
 * service a team would write, called from a controller route, next to the same service written
 * correctly. Shared by guard-bug-zoo.e2e-spec.ts (mode 'throw') and guard-modes.e2e-spec.ts ('warn',
 * 'off'), plus the exception recorder and pool-acquisition counter those suites and testing-kit.e2e-spec.ts
 * use. Latches, recording loggers, the POST helper and the leak check are in test/support/.
 *
 * The services are defined by `defineZoo()`, on the ZooItem entity of entities.ts. The lines marked
 * `// zoo:…` are the ones the guard's messages must point at: tests look them up with `lineOf()`.
 */
import {
  type ArgumentsHost,
  Body,
  Catch,
  Controller,
  type DynamicModule,
  type ExceptionFilter,
  HttpException,
  Injectable,
  Post,
  type Provider,
  type Type,
} from '@nestjs/common';
import { APP_FILTER, HttpAdapterHost } from '@nestjs/core';
import { InjectDataSource, InjectEntityManager, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { DataSource, EntityManager, Like, Repository } from 'typeorm';
import { InjectTxRepository, TransactionalModule, TransactionHost, Tx } from '../../lib';
import { tableOf, ZooItem } from './entities';

const ZOO_ITEMS = tableOf(ZooItem);

// ---------------------------------------------------------------------------------------------
// The zoo

/** Request body of every zoo route: a label unique to the request, to find its rows afterwards. */
export interface ZooBody {
  label: string;
}

/** What a zoo route answers: how many rows of its kind its unit of work could see (or per-row counts). */
export interface ZooAnswer {
  total?: number;
  seen?: number[];
}

/** One bug of the zoo: its route, the seed it comes from, the call sites its messages must name. */
export interface ZooBug {
  /** Route `POST /zoo/<kind>` (buggy) and `POST /fixed/<kind>` (correct); also the rows' `kind`. */
  kind: string;
  /** What the buggy service does, for test names. */
  does: string;
  /** `Class.method` of the buggy service. */
  site: string;
  /** Marker of the line that asks for the second connection. */
  bugMarker: string;
  /** Marker of the line where the unit of work took its own connection. */
  holderMarker: string;
  /** Text of the guard's fix advice for this kind of call. */
  fix: string;
  /** What the guard names as the culprit. */
  culprit: string;
  /** Second-connection acquisitions one buggy request makes (what `guardViolations` counts). */
  violationsPerRequest: number;
  /** Rows of its kind one request writes when it goes through. */
  rowsPerRequest: number;
}

/** Rows the nested-iteration services insert and then iterate (seed 004). */
export const ROWS_PER_ITERATION = 3;

const REPOSITORY_FIX =
  'Use the repository from @InjectTxRepository(ZooItem), tx.getRepository(ZooItem) or tx.withRepository(repository) with the manager from @Tx().';
const DATA_SOURCE_FIX =
  "Run the query through the unit of work's manager (@Tx(), TransactionHost.manager() or an @InjectTxRepository() " +
  'repository) instead of the data source, its manager or a new query runner; use tx.transaction() for a nested ' +
  "transaction (a savepoint on the same connection); finish reading one query's rows before starting the next.";
const SECOND_CONNECTION = "A second connection was requested from the pool of data source 'default'";

export const ZOO_BUGS: readonly ZooBug[] = [
  {
    kind: 'repository',
    does: 'uses a plain @InjectRepository repository in a request (seed 002)',
    site: 'PeopleService.create',
    bugMarker: 'zoo:repository-bug',
    holderMarker: 'zoo:repository-holds',
    fix: REPOSITORY_FIX,
    culprit: 'Repository<ZooItem>.countBy() was called',
    rowsPerRequest: 1,
    violationsPerRequest: 1,
  },
  {
    kind: 'nested-transaction',
    does: 'opens dataSource.transaction() inside the request transaction (seed 000)',
    site: 'SignatureService.sign',
    bugMarker: 'zoo:nested-transaction-bug',
    holderMarker: 'zoo:nested-transaction-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: 2,
    violationsPerRequest: 1,
  },
  {
    kind: 'nested-iteration',
    does: "queries the data source while iterating another query's rows (seed 004)",
    site: 'LedgerService.reconcile',
    bugMarker: 'zoo:nested-iteration-bug',
    holderMarker: 'zoo:nested-iteration-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: ROWS_PER_ITERATION,
    violationsPerRequest: ROWS_PER_ITERATION,
  },
  {
    kind: 'data-source-query',
    does: 'runs dataSource.query()',
    site: 'RawReportService.create',
    bugMarker: 'zoo:data-source-query-bug',
    holderMarker: 'zoo:data-source-query-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: 1,
    violationsPerRequest: 1,
  },
  {
    kind: 'query-builder',
    does: 'runs dataSource.createQueryBuilder().getMany()',
    site: 'SearchService.create',
    bugMarker: 'zoo:query-builder-bug',
    holderMarker: 'zoo:query-builder-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: 1,
    violationsPerRequest: 1,
  },
  {
    kind: 'entity-manager',
    does: 'uses the @InjectEntityManager() manager',
    site: 'InventoryService.create',
    bugMarker: 'zoo:entity-manager-bug',
    holderMarker: 'zoo:entity-manager-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: 1,
    violationsPerRequest: 1,
  },
  {
    kind: 'query-runner',
    does: 'connects dataSource.createQueryRunner()',
    site: 'ExportService.create',
    bugMarker: 'zoo:query-runner-bug',
    holderMarker: 'zoo:query-runner-holds',
    fix: DATA_SOURCE_FIX,
    culprit: SECOND_CONNECTION,
    rowsPerRequest: 1,
    violationsPerRequest: 1,
  },
];

/** What `defineZoo()` gives a suite. */
export interface Zoo {
  imports: DynamicModule[];
  controllers: Array<Type<unknown>>;
  providers: Provider[];
}

/**
 * The zoo's services and controllers, on the ZooItem entity. Import `imports` and list `controllers` and
 * `providers` in the app, beside `TypeOrmModule.forRoot()` (with ZooItem among its entities) and
 * `TransactionalModule.forRoot()`.
 */
export function defineZoo(): Zoo {
  /** Rows of one query, pulled one at a time while the query stays open (pgx's `rows.Next()`). */
  async function* openRows(tx: EntityManager, label: string): AsyncGenerator<{ id: number; label: string }> {
    if (tx.connection.options.type === 'postgres') {
      // TypeORM streams on PostgreSQL need pg-query-stream; a server-side cursor holds the
      // connection the same way: the query stays open until its last row is read.
      await tx.query(`DECLARE zoo_rows NO SCROLL CURSOR FOR SELECT id, label FROM ${ZOO_ITEMS} WHERE label LIKE $1 ORDER BY id`, [
        `${label}#%`,
      ]);
      try {
        for (;;) {
          const [row] = await tx.query<Array<{ id: number; label: string }>>('FETCH NEXT FROM zoo_rows');
          if (row === undefined) return;
          yield row;
        }
      } finally {
        await tx.query('CLOSE zoo_rows');
      }
    } else {
      const stream: Readable = await tx
        .createQueryBuilder(ZooItem, 'i')
        .select(['i.id', 'i.label'])
        .where('i.label LIKE :prefix', { prefix: `${label}#%` })
        .orderBy('i.id')
        .stream();
      for await (const raw of stream as AsyncIterable<{ i_id: number; i_label: string }>) {
        yield { id: raw.i_id, label: raw.i_label };
      }
    }
  }

  const countOf = (rows: Array<{ n: number | string }>) => Number(rows[0].n);

  // --- seed 002: a service that ignores the request's transaction for one query ---------------------

  @Injectable()
  class PeopleService {
    constructor(
      @InjectTxRepository(ZooItem) private readonly items: Repository<ZooItem>,
      @InjectRepository(ZooItem) private readonly plainItems: Repository<ZooItem>,
    ) {}

    async create(label: string): Promise<ZooAnswer> {
      await this.items.save(this.items.create({ label, kind: 'repository' })); // zoo:repository-holds
      const total = await this.plainItems.countBy({ kind: 'repository' }); // zoo:repository-bug
      return { total };
    }
  }

  @Injectable()
  class FixedPeopleService {
    constructor(@InjectTxRepository(ZooItem) private readonly items: Repository<ZooItem>) {}

    async create(label: string): Promise<ZooAnswer> {
      await this.items.save(this.items.create({ label, kind: 'repository' }));
      const total = await this.items.countBy({ kind: 'repository' });
      return { total };
    }
  }

  // --- seed 000: a nested transaction opened from code already running in one ------------------

  @Injectable()
  class SignatureService {
    constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

    async sign(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.save(ZooItem, { label, kind: 'nested-transaction' }); // zoo:nested-transaction-holds
      const webhook = { label: `${label}/webhook`, kind: 'nested-transaction' };
      await this.dataSource.transaction((inner) => inner.save(ZooItem, webhook)); // zoo:nested-transaction-bug
      return {};
    }
  }

  @Injectable()
  class FixedSignatureService {
    async sign(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.save(ZooItem, { label, kind: 'nested-transaction' });
      await tx.transaction((inner) => inner.save(ZooItem, { label: `${label}/webhook`, kind: 'nested-transaction' }));
      return {};
    }
  }

  // --- seed 004: a query nested in the iteration of another query's rows ----------------------

  @Injectable()
  class LedgerService {
    constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

    async reconcile(tx: EntityManager, label: string): Promise<ZooAnswer> {
      const entries = Array.from({ length: ROWS_PER_ITERATION }, (_, i) => ({
        label: `${label}#${i + 1}`,
        kind: 'nested-iteration',
      }));
      await tx.insert(ZooItem, entries); // zoo:nested-iteration-holds
      const seen: number[] = [];
      const count = `SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE label = ${param(this.dataSource)}`;
      for await (const row of openRows(tx, label)) {
        seen.push(countOf(await this.dataSource.query(count, [row.label]))); // zoo:nested-iteration-bug
      }
      await tx.update(ZooItem, { label: Like(`${label}#%`) }, { note: `seen ${seen.join(',')}` });
      return { seen };
    }
  }

  @Injectable()
  class FixedLedgerService {
    async reconcile(tx: EntityManager, label: string): Promise<ZooAnswer> {
      const entries = Array.from({ length: ROWS_PER_ITERATION }, (_, i) => ({
        label: `${label}#${i + 1}`,
        kind: 'nested-iteration',
      }));
      await tx.insert(ZooItem, entries);
      // Read every row first, then query for each: one open query at a time, on the unit's connection.
      const rows: Array<{ id: number; label: string }> = [];
      for await (const row of openRows(tx, label)) rows.push(row);
      const seen: number[] = [];
      for (const row of rows) {
        seen.push(
          countOf(await tx.query(`SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE label = ${param(tx.connection)}`, [row.label])),
        );
      }
      await tx.update(ZooItem, { label: Like(`${label}#%`) }, { note: `seen ${seen.join(',')}` });
      return { seen };
    }
  }

  // --- the other ways to reach the pool from inside a request ---------------------------------

  @Injectable()
  class RawReportService {
    constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'data-source-query' }); // zoo:data-source-query-holds
      const rows = await this.dataSource.query(`SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE kind = 'data-source-query'`); // zoo:data-source-query-bug
      return { total: countOf(rows) };
    }
  }

  @Injectable()
  class FixedRawReportService {
    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'data-source-query' });
      const rows = await tx.query(`SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE kind = 'data-source-query'`);
      return { total: countOf(rows) };
    }
  }

  @Injectable()
  class SearchService {
    constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'query-builder' }); // zoo:query-builder-holds
      const found = await this.dataSource
        .createQueryBuilder(ZooItem, 'i')
        .where('i.kind = :kind', { kind: 'query-builder' })
        .getMany(); // zoo:query-builder-bug
      return { total: found.length };
    }
  }

  @Injectable()
  class FixedSearchService {
    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'query-builder' });
      const found = await tx.createQueryBuilder(ZooItem, 'i').where('i.kind = :kind', { kind: 'query-builder' }).getMany();
      return { total: found.length };
    }
  }

  @Injectable()
  class InventoryService {
    constructor(
      @InjectTxRepository(ZooItem) private readonly items: Repository<ZooItem>,
      @InjectEntityManager() private readonly manager: EntityManager,
    ) {}

    async create(label: string): Promise<ZooAnswer> {
      await this.items.insert({ label, kind: 'entity-manager' }); // zoo:entity-manager-holds
      const total = await this.manager.countBy(ZooItem, { kind: 'entity-manager' }); // zoo:entity-manager-bug
      return { total };
    }
  }

  @Injectable()
  class FixedInventoryService {
    constructor(
      @InjectTxRepository(ZooItem) private readonly items: Repository<ZooItem>,
      private readonly host: TransactionHost,
    ) {}

    async create(label: string): Promise<ZooAnswer> {
      await this.items.insert({ label, kind: 'entity-manager' });
      const total = await this.host.manager().countBy(ZooItem, { kind: 'entity-manager' });
      return { total };
    }
  }

  @Injectable()
  class ExportService {
    constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'query-runner' }); // zoo:query-runner-holds
      const runner = this.dataSource.createQueryRunner();
      await runner.connect(); // zoo:query-runner-bug
      try {
        return { total: countOf(await runner.query(`SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE kind = 'query-runner'`)) };
      } finally {
        await runner.release();
      }
    }
  }

  @Injectable()
  class FixedExportService {
    async create(tx: EntityManager, label: string): Promise<ZooAnswer> {
      await tx.insert(ZooItem, { label, kind: 'query-runner' });
      // The unit of work's own query runner: already the request's connection.
      return {
        total: countOf(await tx.queryRunner!.query(`SELECT COUNT(*) AS n FROM ${ZOO_ITEMS} WHERE kind = 'query-runner'`)),
      };
    }
  }

  @Controller('zoo')
  class ZooController {
    constructor(
      private readonly people: PeopleService,
      private readonly signatures: SignatureService,
      private readonly ledger: LedgerService,
      private readonly reports: RawReportService,
      private readonly search: SearchService,
      private readonly inventory: InventoryService,
      private readonly exports: ExportService,
    ) {}

    @Post('repository')
    repository(@Body() body: ZooBody) {
      return this.people.create(body.label);
    }

    @Post('nested-transaction')
    nestedTransaction(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.signatures.sign(tx, body.label);
    }

    @Post('nested-iteration')
    nestedIteration(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.ledger.reconcile(tx, body.label);
    }

    @Post('data-source-query')
    dataSourceQuery(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.reports.create(tx, body.label);
    }

    @Post('query-builder')
    queryBuilder(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.search.create(tx, body.label);
    }

    @Post('entity-manager')
    entityManager(@Body() body: ZooBody) {
      return this.inventory.create(body.label);
    }

    @Post('query-runner')
    queryRunner(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.exports.create(tx, body.label);
    }
  }

  @Controller('fixed')
  class FixedController {
    constructor(
      private readonly people: FixedPeopleService,
      private readonly signatures: FixedSignatureService,
      private readonly ledger: FixedLedgerService,
      private readonly reports: FixedRawReportService,
      private readonly search: FixedSearchService,
      private readonly inventory: FixedInventoryService,
      private readonly exports: FixedExportService,
    ) {}

    @Post('repository')
    repository(@Body() body: ZooBody) {
      return this.people.create(body.label);
    }

    @Post('nested-transaction')
    nestedTransaction(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.signatures.sign(tx, body.label);
    }

    @Post('nested-iteration')
    nestedIteration(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.ledger.reconcile(tx, body.label);
    }

    @Post('data-source-query')
    dataSourceQuery(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.reports.create(tx, body.label);
    }

    @Post('query-builder')
    queryBuilder(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.search.create(tx, body.label);
    }

    @Post('entity-manager')
    entityManager(@Body() body: ZooBody) {
      return this.inventory.create(body.label);
    }

    @Post('query-runner')
    queryRunner(@Body() body: ZooBody, @Tx() tx: EntityManager) {
      return this.exports.create(tx, body.label);
    }
  }

  return {
    imports: [TypeOrmModule.forFeature([ZooItem]), TransactionalModule.forFeature([ZooItem])],
    controllers: [ZooController, FixedController],
    providers: [
      PeopleService,
      FixedPeopleService,
      SignatureService,
      FixedSignatureService,
      LedgerService,
      FixedLedgerService,
      RawReportService,
      FixedRawReportService,
      SearchService,
      FixedSearchService,
      InventoryService,
      FixedInventoryService,
      ExportService,
      FixedExportService,
    ],
  };
}

function param(dataSource: DataSource): string {
  return dataSource.options.type === 'postgres' ? '$1' : '?';
}

/** The 1-based line of `file` (default: this one) that ends with `// <marker>`. */
export function lineOf(marker: string, file: string = __filename): number {
  const lines = readFileSync(file, 'utf8').split('\n');
  const index = lines.findIndex((line) => line.trimEnd().endsWith(`// ${marker}`));
  if (index === -1) throw new Error(`no line of ${file} ends with // ${marker}`);
  return index + 1;
}

/** A call site as the guard prints it, `Class.method (…/file.ts:42:7)`, for the line of `marker` in `file`. */
export function siteAt(fn: string, marker: string, file: string = __filename): RegExp {
  const name = file.split(/[\\/]/).pop()!;
  return new RegExp(`${escape(fn)} \\([^()]*${escape(name)}:${lineOf(marker, file)}:\\d+\\)`);
}

export function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// Recorders

/** The exceptions that reached the app's exception filter, in order. */
@Injectable()
export class ErrorRecorder {
  readonly errors: unknown[] = [];

  clear(): void {
    this.errors.length = 0;
  }
}

/**
 * Records every exception a route throws, then answers like Nest would (HttpException: its status
 * and body; anything else: 500) with the error's class name, so route code stays as a user writes it.
 */
@Catch()
class RecordingExceptionFilter implements ExceptionFilter {
  constructor(
    private readonly recorder: ErrorRecorder,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    this.recorder.errors.push(exception);
    const status = exception instanceof HttpException ? exception.getStatus() : 500;
    const body =
      exception instanceof HttpException
        ? exception.getResponse()
        : { statusCode: 500, error: exception instanceof Error ? exception.name : String(exception) };
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), body, status);
  }
}

/** Providers that install the recording exception filter; read it with `app.get(ErrorRecorder)`. */
export const recordingFilterProviders = [ErrorRecorder, { provide: APP_FILTER, useClass: RecordingExceptionFilter }];

// ---------------------------------------------------------------------------------------------
// The pool below the guard

/**
 * Counts the requests made to the driver's pool itself (pg-pool `connect`, mysql2 `getConnection`),
 * below the library's guard: a guard that rejects before touching the pool leaves it unchanged.
 */
export function countPoolAcquisitions(dataSource: DataSource): { count(): number; restore(): void } {
  const driver = dataSource.driver as unknown as { master?: Record<string, unknown>; pool?: Record<string, unknown> };
  const [pool, method] = dataSource.options.type === 'postgres' ? [driver.master!, 'connect'] : [driver.pool!, 'getConnection'];
  const own = Object.hasOwn(pool, method);
  const original = pool[method] as (...args: unknown[]) => unknown;
  let count = 0;
  pool[method] = function countedAcquisition(this: unknown, ...args: unknown[]) {
    count += 1;
    return original.apply(this, args);
  };
  return {
    count: () => count,
    restore: () => {
      if (own) pool[method] = original;
      else delete pool[method];
    },
  };
}
