import { ConflictException, Controller, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { getDataSourceToken, InjectDataSource, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, type Repository } from 'typeorm';
import {
  InjectTxRepository,
  TransactionalModule,
  TransactionHost,
  TransactionInterceptor,
  TransactionRunner,
  Tx,
} from '../../lib';
import { ConnectionAudit } from '../../lib/testing';
import { siteAt } from '../support/bug-zoo';
import { mariadbEngine, mysqlAvailable, postgresEngine, typeormOptions } from '../support/databases';
import { AuditEntry, Item, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { expectNothingLeaked } from '../support/leaks';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

// `default` on PostgreSQL, `reports` on MariaDB; on a machine without MariaDB, a second PostgreSQL data source.
const reportsEngine = mysqlAvailable() ? mariadbEngine : postgresEngine;
// The orders on the default data source; the report rows on 'reports' (two tables also when both are on PostgreSQL).
const ORDERS = tableOf(Item);
const REPORT_ROWS = tableOf(AuditEntry);

@Controller('named')
class NamedController {
  constructor(
    @InjectTxRepository(Item) private readonly orders: Repository<Item>,
    @InjectTxRepository(AuditEntry, 'reports') private readonly reportRows: Repository<AuditEntry>,
    @InjectDataSource('reports') private readonly reports: DataSource,
    @InjectDataSource() private readonly defaultSource: DataSource,
    private readonly host: TransactionHost,
  ) {}

  private async writeBoth(tx: EntityManager, reports: EntityManager): Promise<void> {
    await tx.insert(Item, { label: 'via @Tx()' });
    await reports.insert(AuditEntry, { label: "via @Tx('reports')" });
    await this.orders.save({ label: 'via tx repository' });
    await this.reportRows.save({ label: 'via tx repository' });
    await this.host.manager('reports').insert(AuditEntry, { label: "via TransactionHost.manager('reports')" });
  }

  @Post('both')
  async both(@Tx() tx: EntityManager, @Tx('reports') reports: EntityManager) {
    await this.writeBoth(tx, reports);
    return { ok: true };
  }

  @Post('both-then-fail')
  async bothThenFail(@Tx() tx: EntityManager, @Tx('reports') reports: EntityManager) {
    await this.writeBoth(tx, reports);
    throw new ConflictException('changed my mind');
  }

  @Post('default-only')
  async defaultOnly() {
    await this.orders.save({ label: 'default only' });
    return { ok: true };
  }

  @Post('reports-only')
  async reportsOnly() {
    await this.reportRows.save({ label: 'reports only' });
    return { ok: true };
  }

  @Post('plain-reports-query')
  async plainReportsQuery(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'before the plain query' }); // named:default-holds
    await this.reports.query('SELECT 1');
    return { ok: true };
  }

  @Post('plain-reports-query-first')
  async plainReportsQueryFirst(@Tx() tx: EntityManager) {
    await this.reports.query('SELECT 1');
    await tx.insert(Item, { label: 'after the plain query' });
    return { ok: true };
  }

  @Post('plain-default-query')
  async plainDefaultQuery(@Tx('reports') reports: EntityManager) {
    await reports.insert(AuditEntry, { label: 'before the plain query' }); // named:reports-holds
    await this.defaultSource.query('SELECT 1');
    return { ok: true };
  }
}

describe(`named data sources: default on postgres, 'reports' on ${reportsEngine.name}`, () => {
  const applicationName = 'named-ds-e2e';
  const reportsApplicationName = 'named-ds-e2e-reports';
  const defaultSql = new RecordingSqlLogger();
  const reportsSql = new RecordingSqlLogger();
  const pg = suiteObserver('postgres');
  const reportsDb = suiteObserver(reportsEngine);
  const testApp = suiteApp(pg, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(postgresEngine, { poolSize: 1, applicationName, entities: [Item], logger: defaultSql }),
        ),
        TypeOrmModule.forRoot(
          typeormOptions(reportsEngine, {
            name: 'reports',
            poolSize: 2,
            applicationName: reportsApplicationName,
            entities: [AuditEntry],
            logger: reportsSql,
          }),
        ),
        TransactionalModule.forRoot(),
        TransactionalModule.forRoot({ dataSource: 'reports' }),
        TransactionalModule.forFeature([Item]),
        TransactionalModule.forFeature([AuditEntry], 'reports'),
      ],
      controllers: [NamedController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    }),
  });
  let defaultSource: DataSource;
  let reportsSource: DataSource;

  // The 'reports' data source, on its own database: what suiteApp does for the default one.
  beforeAll(async () => {
    defaultSource = testApp.dataSource;
    reportsSource = testApp.app.get<DataSource>(getDataSourceToken('reports'));
    await reportsDb.query(`DELETE FROM ${REPORT_ROWS}`);
  });

  beforeEach(() => {
    defaultSql.clear();
    reportsSql.clear();
  });

  afterEach(async () => {
    await expectNothingLeaked({ dataSource: reportsSource, db: reportsDb, applicationName: reportsApplicationName });
    await reportsDb.query(`DELETE FROM ${REPORT_ROWS}`);
  });

  const post = (path: string) => fetch(`${testApp.url}${path}`, { method: 'POST' });
  const begin = (engineName: string) => (engineName === 'postgres' ? 'BEGIN' : 'START TRANSACTION');

  it('commits the work of one request on both data sources before answering 2xx', async () => {
    const res = await post('/named/both');

    expect(res.status).toBe(201);
    expect(await labelsIn(pg, ORDERS)).toEqual(['via @Tx()', 'via tx repository']);
    expect(await labelsIn(reportsDb, REPORT_ROWS)).toEqual([
      "via @Tx('reports')",
      "via TransactionHost.manager('reports')",
      'via tx repository',
    ]);
    expect(defaultSql.transactionControl({ settings: true })).toEqual(['BEGIN', 'COMMIT']);
    expect(reportsSql.transactionControl({ settings: true })).toEqual([begin(reportsEngine.name), 'COMMIT']);
  });

  it('binds the interceptor once for both forRoot() calls: one unit of work per request', async () => {
    const intercept = jest.spyOn(TransactionInterceptor.prototype, 'intercept');
    try {
      expect((await post('/named/both')).status).toBe(201);
      expect(intercept).toHaveBeenCalledTimes(1);
    } finally {
      intercept.mockRestore();
    }
  });

  it('rolls both back when the handler throws', async () => {
    const res = await post('/named/both-then-fail');

    expect(res.status).toBe(409);
    expect(await labelsIn(pg, ORDERS)).toEqual([]);
    expect(await labelsIn(reportsDb, REPORT_ROWS)).toEqual([]);
    expect(defaultSql.transactionControl({ settings: true })).toEqual(['BEGIN', 'ROLLBACK']);
    expect(reportsSql.transactionControl({ settings: true })).toEqual([begin(reportsEngine.name), 'ROLLBACK']);
  });

  it.each([
    { route: 'default-only', used: 'default', untouched: 'reports' },
    { route: 'reports-only', used: 'reports', untouched: 'default' },
  ] as const)('a route that uses only $used takes no connection from $untouched', async ({ route, untouched }) => {
    const untouchedSource = untouched === 'default' ? defaultSource : reportsSource;
    const untouchedSql = untouched === 'default' ? defaultSql : reportsSql;
    const audit = ConnectionAudit.attach(untouchedSource);
    try {
      const res = await post(`/named/${route}`);

      expect(res.status).toBe(201);
      expect(audit.units()).toEqual([]);
      expect(untouchedSql.statements()).toEqual([]);
    } finally {
      audit.detach();
    }
    const [table, db] = untouched === 'default' ? [REPORT_ROWS, reportsDb] : [ORDERS, pg];
    expect(await labelsIn(db, table)).toEqual([route.replace('-', ' ')]);
  });

  it("catches a plain query on the 'reports' data source inside the request, and rolls the request back", async () => {
    const host = testApp.get(TransactionHost);
    const violationsBefore = host.stats().guardViolations;

    const res = await post('/named/plain-reports-query');

    expect(res.status).toBe(500);
    const body = (await res.json()) as ErrorBody;
    expect(body.name).toBe('NestedConnectionError');
    expect(body.message).toMatch(
      /^A second connection was requested from the pool of data source 'reports' during the transaction of POST \/named\/plain-reports-query \(at NamedController\.plainReportsQuery /,
    );
    expect(body.message).toMatch(
      new RegExp(
        `It would take a connection of data source 'reports' while this unit of work holds one of data source 'default' ` +
          `\\(taken at ${siteAt('NamedController.plainReportsQuery', 'named:default-holds', __filename).source}\\), which deadlocks the pools under load\\.`,
      ),
    );
    expect(host.stats().guardViolations).toBe(violationsBefore + 1);
    // Caught before it reached the pool.
    expect(reportsSql.statements()).toEqual([]);
    expect(await labelsIn(pg, ORDERS)).toEqual([]);
  });

  it("catches a plain query on the default data source while the request holds a connection of 'reports'", async () => {
    const host = testApp.get(TransactionHost);
    const violationsBefore = host.stats().guardViolations;

    const res = await post('/named/plain-default-query');

    expect(res.status).toBe(500);
    const body = (await res.json()) as ErrorBody;
    expect(body.name).toBe('NestedConnectionError');
    expect(body.message).toMatch(
      new RegExp(
        `^A second connection was requested from the pool of data source 'default' during the transaction of POST /named/plain-default-query .*` +
          `It would take a connection of data source 'default' while this unit of work holds one of data source 'reports' ` +
          `\\(taken at ${siteAt('NamedController.plainDefaultQuery', 'named:reports-holds', __filename).source}\\)`,
      ),
    );
    expect(host.stats().guardViolations).toBe(violationsBefore + 1);
    expect(defaultSql.statements()).toEqual([]);
    expect(await labelsIn(reportsDb, REPORT_ROWS)).toEqual([]);
  });

  it("lets a plain query on 'reports' through while the request holds nothing yet", async () => {
    const host = testApp.get(TransactionHost);
    const violationsBefore = host.stats().guardViolations;

    const res = await post('/named/plain-reports-query-first');

    expect(res.status).toBe(201);
    expect(host.stats().guardViolations).toBe(violationsBefore);
    expect(reportsSql.statements()).toEqual(['SELECT 1']);
    expect(defaultSql.transactionControl({ settings: true })).toEqual(['BEGIN', 'COMMIT']);
    expect(await labelsIn(pg, ORDERS)).toEqual(['after the plain query']);
  });

  it("runs TransactionRunner.run({ dataSource: 'reports' }) on that data source", async () => {
    const runner = testApp.get(TransactionRunner);

    await runner.run((tx) => tx.insert(AuditEntry, { label: 'from a job' }), { dataSource: 'reports', name: 'reports job' });

    expect(await labelsIn(reportsDb, REPORT_ROWS)).toEqual(['from a job']);
    expect(defaultSql.statements()).toEqual([]);
    expect(reportsSql.transactionControl({ settings: true })).toEqual([begin(reportsEngine.name), 'COMMIT']);
  });
});
