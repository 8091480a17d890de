/**
 * A unit of work on two data sources commits them one after the other, in the order of their first
 * statement (not the order of the handler's `@Tx()` parameters). There is no two-phase commit: when
 * the second COMMIT fails after the first went through, the request fails with PartialCommitError,
 * which names both data sources, and the library logs it. Two PostgreSQL pools on one database, with
 * a table each; the second COMMIT is made to fail by a DEFERRABLE INITIALLY DEFERRED unique constraint.
 */
import { type ArgumentsHost, Catch, Controller, Injectable, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager } from 'typeorm';
import { PartialCommitError, TransactionalModule, TransactionHost, Tx } from '../../lib';
import { adapters } from '../support/app';
import { postgresEngine, typeormOptions } from '../support/databases';
import { AuditEntry, Item, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { call } from '../support/http';
import { expectNothingLeaked } from '../support/leaks';
import { observer } from '../support/observer';
import { isTransactionControl, RecordingNestLogger, RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const ORDERS = tableOf(Item);
const AUDIT = tableOf(AuditEntry);
/** The deferred unique constraint this suite puts on the audit table's labels, and drops after its tests. */
const DEFERRED_UNIQUE = `${AUDIT}_label_deferred`;
/** A label the audit table already holds: a second row with it fails the audit COMMIT (the check is deferred). */
const TAKEN = 'already taken';

/** The error the last failed request ended with, as the exception filter got it. */
let lastError: unknown;
/** The hooks that ran in the current test. */
let hooksRan: string[] = [];

/** {@link ErrorBodyFilter} that also keeps the error for the test. */
@Catch()
@Injectable()
class KeepingErrorFilter extends ErrorBodyFilter {
  override catch(exception: unknown, host: ArgumentsHost): void {
    lastError = exception;
    super.catch(exception, host);
  }
}

@Controller('commit-order')
class CommitOrderController {
  constructor(private readonly host: TransactionHost) {}

  // Each case in both parameter orders: whatever order the @Tx() arguments are resolved in, only the
  // order of use may decide.

  @Post('default-param-first/audit-used-first')
  async defaultParamAuditUsed(@Tx() orders: EntityManager, @Tx('audit') audit: EntityManager) {
    return this.write([audit, AuditEntry], [orders, Item]);
  }

  @Post('default-param-first/default-used-first')
  async defaultParamDefaultUsed(@Tx() orders: EntityManager, @Tx('audit') audit: EntityManager) {
    return this.write([orders, Item], [audit, AuditEntry]);
  }

  @Post('audit-param-first/audit-used-first')
  async auditParamAuditUsed(@Tx('audit') audit: EntityManager, @Tx() orders: EntityManager) {
    return this.write([audit, AuditEntry], [orders, Item]);
  }

  @Post('audit-param-first/default-used-first')
  async auditParamDefaultUsed(@Tx('audit') audit: EntityManager, @Tx() orders: EntityManager) {
    return this.write([orders, Item], [audit, AuditEntry]);
  }

  /** One row through `first`'s manager, then one through `second`'s. */
  private async write(...writes: Array<[EntityManager, typeof AuditEntry | typeof Item]>) {
    for (const [tx, entity] of writes) await tx.insert(entity, { label: 'written' });
    return { ok: true };
  }

  /** Default first; audit's COMMIT then fails on the deferred unique constraint. */
  @Post('default-param-first/second-commit-fails')
  async defaultParamSecondCommitFails(@Tx() orders: EntityManager, @Tx('audit') audit: EntityManager) {
    return this.partial(orders, audit);
  }

  @Post('audit-param-first/second-commit-fails')
  async auditParamSecondCommitFails(@Tx('audit') audit: EntityManager, @Tx() orders: EntityManager) {
    return this.partial(orders, audit);
  }

  private async partial(orders: EntityManager, audit: EntityManager) {
    this.host.afterCommit(() => hooksRan.push('afterCommit'));
    this.host.afterRollback(() => hooksRan.push('afterRollback'));
    await orders.insert(Item, { label: 'order of a partial commit' });
    await audit.insert(AuditEntry, { label: TAKEN });
    return { ok: true };
  }

  /** Audit first: its COMMIT fails before default's is sent. */
  @Post('first-commit-fails')
  async firstCommitFails(@Tx() orders: EntityManager, @Tx('audit') audit: EntityManager) {
    await audit.insert(AuditEntry, { label: TAKEN });
    await orders.insert(Item, { label: 'order after a failing audit' });
    return { ok: true };
  }

  /** Takes the audit manager but never queries it: it has nothing to commit. */
  @Post('audit-unused')
  async auditUnused(@Tx('audit') audit: EntityManager, @Tx() orders: EntityManager) {
    void audit;
    await orders.insert(Item, { label: 'order alone' });
    await this.host.manager().insert(Item, { label: 'order alone, through TransactionHost' });
    return { ok: true };
  }
}

describe.each(adapters)('commit order across two data sources, over %s', (adapter) => {
  const applicationName = `commit-order-e2e-${adapter}`;
  const auditApplicationName = `commit-order-e2e-audit-${adapter}`;
  /** Shared by both data sources: one log, in the order the statements went out. */
  const sql = new RecordingSqlLogger();
  const nestLog = new RecordingNestLogger();
  const db = suiteObserver(postgresEngine);
  let auditSource: DataSource;
  // Before suiteApp's check and emptying of the tables: a transaction the audit data source leaked would hold their rows.
  afterEach(() => expectNothingLeaked({ dataSource: auditSource, db, applicationName: auditApplicationName }));
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item, AuditEntry],
    app: () => ({
      adapter,
      logger: nestLog,
      imports: [
        TypeOrmModule.forRoot(typeormOptions(postgresEngine, { poolSize: 1, applicationName, entities: [Item], logger: sql })),
        TypeOrmModule.forRoot(
          typeormOptions(postgresEngine, {
            name: 'audit',
            poolSize: 1,
            applicationName: auditApplicationName,
            entities: [AuditEntry],
            logger: sql,
          }),
        ),
        TransactionalModule.forRoot(),
        TransactionalModule.forRoot({ dataSource: 'audit' }),
      ],
      controllers: [CommitOrderController],
      providers: [{ provide: APP_FILTER, useClass: KeepingErrorFilter }],
    }),
  });

  /** BEGIN / COMMIT / ROLLBACK as `dataSource: statement`, in the order they were sent. */
  function transactionControl(): string[] {
    return sql
      .sent()
      .filter((entry) => isTransactionControl(entry.sql))
      .map((entry) => `${entry.queryRunner?.dataSource === auditSource ? 'audit' : 'default'}: ${entry.sql}`);
  }

  beforeAll(async () => {
    auditSource = testApp.app.get<DataSource>(getDataSourceToken('audit'));
    // After the app synchronized its tables, which would drop a constraint its entities do not declare.
    await db.query(`ALTER TABLE ${AUDIT} DROP CONSTRAINT IF EXISTS ${DEFERRED_UNIQUE}`);
    await db.query(`ALTER TABLE ${AUDIT} ADD CONSTRAINT ${DEFERRED_UNIQUE} UNIQUE (label) DEFERRABLE INITIALLY DEFERRED`);
  });

  beforeEach(async () => {
    await db.query(`INSERT INTO ${AUDIT} (label) VALUES ($1)`, [TAKEN]);
    sql.clear();
    nestLog.entries.length = 0;
    lastError = undefined;
    hooksRan = [];
  });

  afterAll(async () => {
    // The table is shared with the other suites: it goes back to what its entity declares. Through an observer
    // of its own: the suite's is closed by now (afterAll hooks run in the order they were registered).
    const admin = await observer(postgresEngine);
    try {
      await admin.query(`ALTER TABLE ${AUDIT} DROP CONSTRAINT IF EXISTS ${DEFERRED_UNIQUE}`);
    } finally {
      await admin.close();
    }
  });

  it.each([
    { param: 'default', first: 'audit', second: 'default' },
    { param: 'default', first: 'default', second: 'audit' },
    { param: 'audit', first: 'audit', second: 'default' },
    { param: 'audit', first: 'default', second: 'audit' },
  ])(
    'commits in the order of first use ($first, then $second) with the $param @Tx() parameter first',
    async ({ param, first, second }) => {
      const reply = await call('POST', `${testApp.url}/commit-order/${param}-param-first/${first}-used-first`);

      expect(reply.status).toBe(201);
      expect(transactionControl()).toEqual([`${first}: BEGIN`, `${second}: BEGIN`, `${first}: COMMIT`, `${second}: COMMIT`]);
      expect(await labelsIn(db, ORDERS)).toEqual(['written']);
      expect(await labelsIn(db, AUDIT)).toEqual([TAKEN, 'written']);
    },
  );

  it('sends nothing on a data source whose manager was taken but never used', async () => {
    const reply = await call('POST', `${testApp.url}/commit-order/audit-unused`);

    expect(reply.status).toBe(201);
    expect(transactionControl()).toEqual(['default: BEGIN', 'default: COMMIT']);
    expect(await labelsIn(db, ORDERS)).toEqual(['order alone', 'order alone, through TransactionHost']);
  });

  describe('when the second COMMIT fails after the first went through', () => {
    it.each(['default', 'audit'])(
      'fails the request with PartialCommitError naming both data sources, and logs it (the %s @Tx() parameter first)',
      async (param) => {
        const host = testApp.get(TransactionHost);
        const before = host.stats().dataSources;

        const reply = await call<ErrorBody>('POST', `${testApp.url}/commit-order/${param}-param-first/second-commit-fails`);

        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('PartialCommitError');
        expect(reply.body.message).toMatch(
          /^POST \/commit-order\/(default|audit)-param-first\/second-commit-fails committed on data source 'default', then the COMMIT on data source 'audit' failed \(duplicate key value violates unique constraint "audit_entries_label_deferred"\) and its work was rolled back\. There is no two-phase commit across data sources: the work on 'default' stays committed\./,
        );
        expect(reply.body.cause).toMatchObject({ name: 'QueryFailedError', code: '23505' });
        expect(lastError).toBeInstanceOf(PartialCommitError);
        expect(lastError).toMatchObject({ committed: ['default'], failed: 'audit' });
        // What the database holds: the first data source's work, and none of the second's.
        expect(await labelsIn(db, ORDERS)).toEqual(['order of a partial commit']);
        expect(await labelsIn(db, AUDIT)).toEqual([TAKEN]);
        expect(sql.failures()).toEqual(['COMMIT']);
        expect(transactionControl()).toEqual([
          'default: BEGIN',
          'audit: BEGIN',
          'default: COMMIT',
          'audit: COMMIT',
          // After the failed COMMIT: makes sure nothing stays open before the connection goes back.
          'audit: ROLLBACK',
        ]);
        expect(nestLog.library('error').map((entry) => entry.message)).toEqual([reply.body.message]);
        // The unit of work failed as a whole: its afterRollback hooks run; stats() counts what each database did.
        expect(hooksRan).toEqual(['afterRollback']);
        const after = host.stats().dataSources;
        expect(after.default.commits - before.default.commits).toBe(1);
        expect(after.audit.commits - before.audit.commits).toBe(0);
        expect(after.audit.rollbacks - before.audit.rollbacks).toBe(1);
      },
    );
  });

  it('fails the request with the COMMIT error, and rolls the other back, when the first COMMIT fails', async () => {
    const reply = await call<ErrorBody>('POST', `${testApp.url}/commit-order/first-commit-fails`);

    expect(reply.status).toBe(500);
    expect(reply.body.name).toBe('QueryFailedError');
    expect(reply.body.code).toBe('23505');
    expect(await labelsIn(db, ORDERS)).toEqual([]);
    expect(await labelsIn(db, AUDIT)).toEqual([TAKEN]);
    expect(transactionControl()).toEqual([
      'audit: BEGIN',
      'default: BEGIN',
      'audit: COMMIT',
      'audit: ROLLBACK',
      'default: ROLLBACK',
    ]);
    // Nothing committed anywhere: not a partial commit.
    expect(nestLog.library('error')).toEqual([]);
  });
});
