/**
 * Isolation at concurrency: 200 requests at once on a pool of ONE connection, each writing its own
 * marker and reading back every marker of the batch its transaction can see. With one connection the
 * units of work run one after another; each must have its own transaction (its own query runner,
 * BEGIN … COMMIT never interleaved with another's) and see exactly the markers committed before it
 * plus its own: never another request's uncommitted marker, never a rolled-back one.
 * On PostgreSQL and MariaDB, over Express and Fastify.
 */
import { ConflictException, Controller, Param, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { EventEmitter } from 'node:events';
import { type EntityManager } from 'typeorm';
import { TransactionalModule, Tx } from '../../lib/index';
import { ConnectionAudit } from '../../lib/testing/index';
import { adapters } from '../support/app';
import { engines, QUEUED_ACQUIRE_TIMEOUT_MS, typeormOptions } from '../support/databases';
import { Marker, tableOf } from '../support/entities';
import { beginStatement, type LoggedQuery, RecordingSqlLogger, statementKind } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const REQUESTS = 200;
/** Requests of the mixed (some failing) round. */
const MIXED_REQUESTS = 100;
/** Jest timeout of a round: above the pool's acquisition timeout, so that a request stuck in the queue shows as such. */
const ROUND_TIMEOUT_MS = 2 * QUEUED_ACQUIRE_TIMEOUT_MS;

const MARKERS = tableOf(Marker);

interface Seen {
  marker: string;
  seen: string[];
}

/** The driver connection each request of `mark()` ran on, in the order they ran. */
const connectionsUsed: EventEmitter[] = [];

@Controller('markers')
class MarkersController {
  /** Writes its marker, then returns every marker of the batch visible in its transaction. */
  @Post(':batch/:marker')
  async mark(@Param('batch') batch: string, @Param('marker') marker: string, @Tx() tx: EntityManager): Promise<Seen> {
    await tx.insert(Marker, { batch, marker });
    connectionsUsed.push((tx.queryRunner as unknown as { databaseConnection: EventEmitter }).databaseConnection);
    const visible = await tx.find(Marker, { where: { batch }, order: { id: 'ASC' } });
    return { marker, seen: visible.map((row) => row.marker) };
  }

  /** The same, then fails: its marker must never be seen by anyone. */
  @Post(':batch/:marker/fail')
  async markThenFail(@Param('batch') batch: string, @Param('marker') marker: string, @Tx() tx: EntityManager): Promise<never> {
    await tx.insert(Marker, { batch, marker });
    await tx.find(Marker, { where: { batch } });
    throw new ConflictException(`${marker} failed after its write`);
  }
}

/** One unit of work as the SQL log shows it: the statements of one query runner, in order. */
interface LoggedUnit {
  kinds: string[];
  marker: string;
}

/**
 * Splits the SQL log into units of work, one per query runner, and checks they never interleave:
 * once a runner's statements stop, it never appears again (one connection, one transaction at a time).
 */
function unitsOf(entries: LoggedQuery[], markers: Set<string>): LoggedUnit[] {
  const units: LoggedUnit[] = [];
  const finished = new Set<unknown>();
  let runner: unknown;
  for (const entry of entries.filter((e) => e.error === undefined)) {
    if (entry.queryRunner !== runner) {
      if (runner !== undefined) finished.add(runner);
      if (finished.has(entry.queryRunner)) throw new Error(`a query runner came back after another ran: ${entry.sql}`);
      runner = entry.queryRunner;
      units.push({ kinds: [], marker: '' });
    }
    const unit = units[units.length - 1];
    unit.kinds.push(statementKind(entry.sql));
    const marker = entry.parameters?.find((p): p is string => typeof p === 'string' && markers.has(p));
    if (marker !== undefined && statementKind(entry.sql) === 'INSERT') unit.marker = marker;
  }
  return units;
}

describe.each(engines)('concurrent requests on a pool of one, on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `concurrency-e2e-${adapter}`;
    const sqlLog = new RecordingSqlLogger();
    const placeholder = engine.name === 'postgres' ? '$1' : '?';
    let audit: ConnectionAudit;

    /** Sends every request at once and waits for all the answers. */
    async function sendAll(paths: string[]): Promise<Array<{ status: number; body: unknown }>> {
      return Promise.all(
        paths.map(async (path) => {
          const response = await fetch(`${testApp.url}${path}`, { method: 'POST' });
          return { status: response.status, body: await response.json() };
        }),
      );
    }

    async function persisted(batch: string): Promise<string[]> {
      const rows = await db.query<{ marker: string }>(
        `SELECT marker FROM ${MARKERS} WHERE batch = ${placeholder} ORDER BY marker`,
        [batch],
      );
      return rows.map((row) => row.marker);
    }

    const testApp = suiteApp(db, {
      applicationName,
      tables: [Marker],
      leakCheck: { mariadb: 'app-connections' },
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot(
            typeormOptions(engine, {
              poolSize: 1,
              applicationName,
              entities: [Marker],
              logger: sqlLog,
              // 200 requests queue for the one connection: the last waits for the 199 units of work
              // before it, seconds on a loaded 2-core machine.
              acquireTimeoutMs: QUEUED_ACQUIRE_TIMEOUT_MS,
            }),
          ),
          TransactionalModule.forRoot(),
        ],
        controllers: [MarkersController],
      }),
    });

    beforeEach(() => {
      sqlLog.clear();
      audit = ConnectionAudit.attach(testApp.dataSource);
    });

    afterEach(() => {
      audit.detach();
    });

    it(
      `answers all ${REQUESTS} with 2xx, each seeing its own marker and only markers committed before it`,
      async () => {
        const batch = `ok-${engine.name}-${adapter}`;
        const markers = Array.from({ length: REQUESTS }, (_, i) => `m${i}`);

        const answers = await sendAll(markers.map((marker) => `/markers/${batch}/${marker}`));

        expect(answers.filter((a) => a.status !== 201)).toEqual([]);
        // The SQL log: one unit of work per request, each its own runner and transaction, never interleaved.
        const units = unitsOf(sqlLog.entries, new Set(markers));
        expect(units).toHaveLength(REQUESTS);
        for (const unit of units) {
          expect(unit.kinds).toEqual([beginStatement(engine.name), 'INSERT', 'SELECT', 'COMMIT']);
        }
        // The k-th unit to run saw the k-1 markers committed before it, and its own: nothing in flight.
        const order = units.map((unit) => unit.marker);
        expect([...order].sort()).toEqual([...markers].sort());
        const seenBy = new Map((answers.map((a) => a.body) as Seen[]).map((body) => [body.marker, body.seen]));
        order.forEach((marker, k) => {
          expect({ marker, seen: seenBy.get(marker) }).toEqual({ marker, seen: order.slice(0, k + 1) });
        });
        // One connection per unit of work, and all of them committed.
        expect(audit.units()).toHaveLength(REQUESTS);
        audit.assertOneConnectionPerUnit();
        expect(await persisted(batch)).toEqual([...markers].sort());
      },
      ROUND_TIMEOUT_MS,
    );

    it(
      'leaves the one connection with the listeners it had after its first request, after dozens more',
      async () => {
        const batch = `listeners-${engine.name}-${adapter}`;
        const listeners = (connection: EventEmitter) => ({
          error: connection.listenerCount('error'),
          end: connection.listenerCount('end'),
        });
        connectionsUsed.length = 0;
        expect((await sendAll([`/markers/${batch}/first`])).map((a) => a.status)).toEqual([201]);
        const [connection] = connectionsUsed;
        const after = listeners(connection);

        const answers = await sendAll(Array.from({ length: 50 }, (_, i) => `/markers/${batch}/m${i}`));

        expect(answers.filter((a) => a.status !== 201)).toEqual([]);
        // Every request held the same connection; the library watches it with listeners put on it once.
        expect(new Set(connectionsUsed)).toEqual(new Set([connection]));
        expect(connectionsUsed).toHaveLength(51);
        expect(listeners(connection)).toEqual(after);
      },
      ROUND_TIMEOUT_MS,
    );

    it(
      `keeps the markers of failed requests invisible to the others among ${MIXED_REQUESTS} at once`,
      async () => {
        const batch = `mixed-${engine.name}-${adapter}`;
        const markers = Array.from({ length: MIXED_REQUESTS }, (_, i) => `m${i}`);
        const fails = (i: number) => i % 4 === 3;

        const answers = await sendAll(markers.map((marker, i) => `/markers/${batch}/${marker}${fails(i) ? '/fail' : ''}`));

        expect(answers.map((a) => a.status)).toEqual(markers.map((_, i) => (fails(i) ? 409 : 201)));
        const failed = new Set(markers.filter((_, i) => fails(i)));
        const units = unitsOf(sqlLog.entries, new Set(markers));
        expect(units).toHaveLength(MIXED_REQUESTS);
        for (const unit of units) {
          const end = failed.has(unit.marker) ? 'ROLLBACK' : 'COMMIT';
          expect(unit.kinds).toEqual([beginStatement(engine.name), 'INSERT', 'SELECT', end]);
        }
        const committedBefore: string[] = [];
        const seenBy = new Map(
          answers
            .map((a) => a.body)
            .filter((b): b is Seen => Array.isArray((b as Seen).seen))
            .map((body) => [body.marker, body.seen]),
        );
        for (const { marker } of units) {
          if (failed.has(marker)) continue;
          committedBefore.push(marker);
          expect({ marker, seen: seenBy.get(marker) }).toEqual({ marker, seen: committedBefore.slice() });
        }
        expect(await persisted(batch)).toEqual(markers.filter((_, i) => !fails(i)).sort());
      },
      ROUND_TIMEOUT_MS,
    );
  });
});
