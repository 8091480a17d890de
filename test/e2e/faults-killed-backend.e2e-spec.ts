/**
 * A request's server connection killed from outside (PostgreSQL `pg_terminate_backend`, MariaDB
 * `KILL`): while the handler waits between two statements, while a statement runs, after the handler
 * returned and before COMMIT, and while the connection sits idle in the pool between requests. The
 * request gets a 500 that says what happened, its writes are gone (the server rolled them back with
 * the session), the dead connection never goes back to the pool, and the next requests — dozens at
 * once on a pool of ONE connection, where a dead connection kept in the pool would fail them all —
 * succeed. On PostgreSQL and MariaDB, over Express and Fastify.
 */
import { Body, Controller, Injectable, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { type EntityManager, type EntitySubscriberInterface, EventSubscriber } from 'typeorm';
import { TransactionalModule, TransactionHost, Tx } from '../../lib/index';
import { adapters } from '../support/app';
import { connectionIdOf, killConnection, killedStatementError, runningStatement, sleepSql } from '../support/connections';
import { engines, typeormOptions } from '../support/databases';
import { StepRecord, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { postJson } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { poolStats } from '../support/leaks';
import { waitFor } from '../support/observer';
import { within } from '../support/outcomes';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(StepRecord);
/** Requests sent at once after a kill, on the pool of one. */
const AFTERWARDS = 24;

/** Holds the next COMMIT once armed: TypeORM awaits `beforeTransactionCommit` before the library sends COMMIT. */
const commitGate = { armed: false, reached: latch(), release: latch() };

@EventSubscriber()
class CommitGate implements EntitySubscriberInterface {
  async beforeTransactionCommit(): Promise<void> {
    if (!commitGate.armed) return;
    commitGate.armed = false;
    commitGate.reached.resolve();
    await commitGate.release.promise;
  }
}

@Injectable()
class Probe {
  engine: 'postgres' | 'mariadb' = 'postgres';
  /** Resolved by a handler with the server id of its connection, once it wrote its first row. */
  entered: Latch<number> = latch();
  /** Resolved by the test to let the handler go on. */
  release: Latch = latch();

  reset(): void {
    this.release.resolve();
    this.entered = latch();
    this.release = latch();
  }
}

@Controller('killed')
class KilledController {
  constructor(private readonly probe: Probe) {}

  /** Two rows, and the id of the connection they went through. */
  @Post()
  async write(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ connectionId: number }> {
    await tx.insert(StepRecord, { label: body.label, step: 'first' });
    const connectionId = await connectionIdOf(tx);
    await tx.insert(StepRecord, { label: body.label, step: 'second' });
    return { connectionId };
  }

  /** One row, then waits on the test between two statements, then the second row. */
  @Post('between-statements')
  async betweenStatements(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(StepRecord, { label: body.label, step: 'first' });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await this.probe.release.promise;
    await tx.insert(StepRecord, { label: body.label, step: 'second' });
    return { label: body.label };
  }

  /** One row, then a statement that runs 30 s unless something stops it, then the second row. */
  @Post('long-statement')
  async longStatement(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(StepRecord, { label: body.label, step: 'first' });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await tx.query(sleepSql(this.probe.engine, 30));
    await tx.insert(StepRecord, { label: body.label, step: 'second' });
    return { label: body.label };
  }
}

/** node-postgres' pool, as far as the broken-client test looks into it. */
interface PgPoolInternals {
  _idle: Array<{ client: { _queryable: boolean } }>;
  _clients: unknown[];
}

/** A connection id no server gives: for checks of the next requests when no connection was killed. */
const NO_CONNECTION = -1;

describe.each(engines)('when the server kills a connection, on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `faults-killed-${adapter}`;
    const placeholder = engine.name === 'postgres' ? '$1' : '?';
    let probe: Probe;

    /** The steps persisted for `label`, as another connection sees them. */
    async function stepsOf(label: string): Promise<string[]> {
      const rows = await db.query<{ step: string }>(`SELECT step FROM ${TABLE} WHERE label = ${placeholder} ORDER BY step`, [
        label,
      ]);
      return rows.map((row) => row.step);
    }

    /**
     * Sends {@link AFTERWARDS} requests at once on the pool of one: each must commit its two rows, and
     * none may run on the killed connection.
     */
    async function nextRequestsSucceed(killedId: number, label: string): Promise<void> {
      const answers = await Promise.all(
        Array.from({ length: AFTERWARDS }, (_, i) =>
          postJson<{ connectionId: number }>(`${testApp.url}/killed`, { label: `${label}-next-${i}` }),
        ),
      );
      expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 201));
      expect(answers.filter((answer) => answer.body.connectionId === killedId)).toEqual([]);
      const [{ count }] = await db.query<{ count: string | number }>(
        `SELECT COUNT(*) AS count FROM ${TABLE} WHERE label LIKE ${placeholder}`,
        [`${label}-next-%`],
      );
      expect(Number(count)).toBe(2 * AFTERWARDS);
    }

    afterEach(() => {
      // Before the leak check: a handler still held by the test lets go of its connection.
      probe.release.resolve();
      commitGate.armed = false;
      commitGate.release.resolve();
      probe.reset();
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables: [StepRecord],
      leakCheck: { mariadb: 'app-connections' },
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot({
            ...typeormOptions(engine, {
              poolSize: 1,
              applicationName,
              entities: [StepRecord],
              // Keep the pooled connection between requests (pg-pool closes idle ones after 10 s).
              extra: engine.name === 'postgres' ? { idleTimeoutMillis: 0 } : undefined,
            }),
            subscribers: [CommitGate],
          }),
          TransactionalModule.forRoot(),
        ],
        controllers: [KilledController],
        providers: [Probe, { provide: APP_FILTER, useClass: ErrorBodyFilter }],
      }),
    });

    beforeAll(() => {
      probe = testApp.get(Probe);
      probe.engine = engine.name;
    });

    afterEach(() => {
      expect(testApp.get(TransactionHost).stats()).toMatchObject({ openUnitsOfWork: 0, connectionsHeld: 0 });
    });

    describe('while the handler waits between two statements', () => {
      it('answers 500 saying the connection was lost, keeps neither row, and serves the next requests', async () => {
        const label = `between-${adapter}`;
        const response = postJson<ErrorBody>(`${testApp.url}/killed/between-statements`, { label });
        const killedId = await within(probe.entered.promise, 'the handler writing its first row');

        await killConnection(db, killedId);
        probe.release.resolve();
        const answer = await within(response, 'the answer of the request whose connection was killed');

        expect(answer.status).toBe(500);
        expect(answer.body).toMatchObject({ name: 'TransactionalError' });
        expect(answer.body.message).toMatch(
          /^The connection of POST \/killed\/between-statements was lost while its transaction was open/,
        );
        expect(await stepsOf(label)).toEqual([]);
        // The dead connection left the pool: nothing is held, nobody waits, what is left is idle.
        expect(poolStats(testApp.dataSource)).toMatchObject({ waiting: 0 });
        await nextRequestsSucceed(killedId, label);
      });
    });

    describe('while a statement of the handler runs', () => {
      it('fails that statement at once, answers 500 with the server’s reason, keeps nothing, and serves the next requests', async () => {
        const label = `running-${adapter}`;
        const response = postJson<ErrorBody>(`${testApp.url}/killed/long-statement`, { label });
        const killedId = await within(probe.entered.promise, 'the handler writing its first row');
        await waitFor(async () => expect(await runningStatement(db, killedId)).toMatch(/sleep/i));

        await killConnection(db, killedId);
        const answer = await within(response, 'the answer of the request whose connection was killed');

        // The 30 s statement did not run to its end: the answer is the server's reason for killing it.
        expect(answer.status).toBe(500);
        expect(answer.body.message).toMatch(killedStatementError(engine.name));
        expect(await stepsOf(label)).toEqual([]);
        await nextRequestsSucceed(killedId, label);
      });
    });

    describe('after the handler returned, before COMMIT', () => {
      it('answers 500, never 2xx, and keeps neither row: the COMMIT had no transaction left to commit', async () => {
        const label = `before-commit-${adapter}`;
        commitGate.armed = true;
        commitGate.reached = latch();
        commitGate.release = latch();
        const response = postJson<ErrorBody>(`${testApp.url}/killed/between-statements`, { label });
        const killedId = await within(probe.entered.promise, 'the handler writing its first row');
        probe.release.resolve();
        await within(commitGate.reached.promise, 'the COMMIT of the request');

        await killConnection(db, killedId);
        commitGate.release.resolve();
        const answer = await within(response, 'the answer of the request whose connection was killed');

        expect(answer.status).toBe(500);
        expect(await stepsOf(label)).toEqual([]);
        await nextRequestsSucceed(killedId, label);
        // The library saw the connection end before it sent COMMIT: it knows the transaction is gone and
        // must say so, not pass on the driver's "not queryable" / "closed state" refusal of the COMMIT.
        expect(answer.body).toMatchObject({ name: 'TransactionalError' });
        expect(answer.body.message).toMatch(
          /^The connection of POST \/killed\/between-statements was lost while its transaction was open/,
        );
      });
    });

    describe('while the connection sits idle in the pool', () => {
      it('serves the next requests on a fresh connection', async () => {
        const label = `idle-${adapter}`;
        const first = await postJson<{ connectionId: number }>(`${testApp.url}/killed`, { label });
        expect(first.status).toBe(201);

        await killConnection(db, first.body.connectionId);

        await nextRequestsSucceed(first.body.connectionId, label);
        expect(await stepsOf(label)).toEqual(['first', 'second']);
      });

      // node-postgres: pg-pool hands out an idle client without checking it, and stops listening for its
      // errors as it does; a restart can break the client in between (seen under load in the restart suite).
      if (engine.name === 'postgres') {
        it('answers a clear 500 when the pool hands out a connection that broke on its way, and serves the next ones', async () => {
          const label = `broken-${adapter}`;
          const first = await postJson<{ connectionId: number }>(`${testApp.url}/killed`, { label });
          expect(first.status).toBe(201);
          // What a restart can leave: the driver already knows the idle connection is dead, and the pool,
          // which was handing it out at that moment, could not take it back.
          const pool = (testApp.dataSource.driver as unknown as { master: PgPoolInternals }).master;
          const broken = pool._idle[0].client;
          broken._queryable = false;

          const answer = await postJson<ErrorBody>(`${testApp.url}/killed/between-statements`, { label: `${label}-2` });

          expect(answer.status).toBe(500);
          expect(answer.body).toMatchObject({ name: 'TransactionalError' });
          expect(answer.body.message).toMatch(
            /^The connection of POST \/killed\/between-statements had broken before its transaction began \(.+\): none of its work reached the database, and the connection was discarded\./,
          );
          // The broken client left the pool (its server connection is fine: through PgBouncer it serves on).
          expect(pool._clients).not.toContain(broken);
          await nextRequestsSucceed(NO_CONNECTION, label);
          expect(await stepsOf(label)).toEqual(['first', 'second']);
        });
      }
    });
  });
});
