/**
 * Streams of rows read through a unit of work's connection (`tx.createQueryBuilder(…).stream()`,
 * TypeORM's `queryRunner.stream()`). The connection is busy until the stream is read to its end, so
 * a stream must be read inside the unit of work: one still open when the unit of work ends closes
 * the connection (the database rolls back) and fails the request at once; a statement through the
 * unit of work while one is open fails at once; a stream read to its end (or closed by its reader)
 * commits normally. Seed 004 (a query on a second connection while iterating another query's rows)
 * is caught by the guard.
 * Pool of one connection: a connection the stream kept would starve the next test, and a second
 * acquisition could never be granted.
 */
import { ConflictException, Controller, Get, Injectable, Post, Query, Res, StreamableFile } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { InjectDataSource, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DataSource, EntityManager, type Repository } from 'typeorm';
import { NoTransaction, OpenStreamError, TransactionalModule, TransactionHost, TransactionRunner, Tx } from '../../lib';
import type { UnitOfWorkState } from '../../lib/core/unit-of-work';
import { adapters } from '../support/app';
import { connectionIdOf } from '../support/connections';
import { engines, typeormOptions } from '../support/databases';
import { Item, NumberedItem, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { call, post } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { poolStats } from '../support/leaks';
import { waitFor } from '../support/observer';
import { within } from '../support/outcomes';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

/** The rows the streams read, by their chosen ids. */
const ROWS_TABLE = tableOf(NumberedItem);
/** What the handlers write. */
const WRITES_TABLE = tableOf(Item);
/**
 * Rows the streams read: more than a stream buffers (16 rows on MariaDB, where mysql2 then pauses
 * the connection; PostgreSQL's cursor waits for every read), so a stream nobody reads never ends.
 */
const ROW_COUNT = 200;

/** A row of a query builder's stream: raw, its columns prefixed with the alias. */
interface RawRow {
  row_id: number;
  row_label: string;
}

/** What the handlers hand the test: their streams, their connection, and latches the test holds them with. */
@Injectable()
class Probe {
  engine: 'postgres' | 'mariadb' = 'postgres';
  /** The streams the handlers opened, for the test to check how they ended. */
  streams: Readable[] = [];
  /** The server-side id of the handler's connection (PostgreSQL pid, MariaDB connection id). */
  connectionId = 0;
  /** Resolved by a handler once it is inside its stream. */
  reading: Latch = latch();
  /** Resolved by the test to let the handler go on. */
  release: Latch = latch();
  /** Resolved by a handler when it is done, with how it ended (a held one: what its next read gave it). */
  finished: Latch<unknown> = latch();
  /** The handler's unit of work's state, read from inside it. */
  unitState: () => UnitOfWorkState | undefined = () => undefined;
  /** An error the handler caught, when it catches one. */
  caught: unknown;

  reset(): void {
    this.release.resolve();
    this.streams = [];
    this.connectionId = 0;
    this.reading = latch();
    this.release = latch();
    this.finished = latch();
    this.unitState = () => undefined;
    this.caught = undefined;
  }
}

@Controller('streams')
class StreamsController {
  constructor(
    private readonly probe: Probe,
    private readonly host: TransactionHost,
    @InjectRepository(Item) private readonly plainWrites: Repository<Item>,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {}

  /**
   * The README's way to stream rows to a client: no unit of work, a query runner of its own, released
   * when the response ended or the client left (pipeline() then destroys the stream of rows).
   */
  @Get('export.ndjson')
  @NoTransaction()
  async export(@Query('rows') count: string, @Res() reply: ServerResponse | { raw: ServerResponse; hijack(): void }) {
    // Express hands the Node response; Fastify its reply, which must be told the handler answers itself.
    if ('hijack' in reply) reply.hijack();
    const res = 'raw' in reply ? reply.raw : reply;
    const sql =
      this.probe.engine === 'postgres'
        ? `SELECT g AS id FROM generate_series(1, ${Number(count)}) g`
        : `SELECT seq AS id FROM seq_1_to_${Number(count)}`;
    const queryRunner = this.dataSource.createQueryRunner();
    try {
      const rows = await queryRunner.stream(sql);
      this.probe.streams.push(rows);
      res.setHeader('content-type', 'application/x-ndjson');
      const outcome = await pipeline(
        rows,
        async function* (source: AsyncIterable<unknown>) {
          for await (const row of source) yield `${JSON.stringify(row)}\n`;
        },
        res,
      ).then(
        () => 'sent every row',
        (error: NodeJS.ErrnoException) => {
          // Else the client left: pipeline() destroyed the stream of rows.
          if (error.code !== 'ERR_STREAM_PREMATURE_CLOSE') throw error;
          return error;
        },
      );
      this.probe.finished.resolve(outcome);
    } finally {
      await queryRunner.release();
    }
  }

  /** Writes, takes note of its connection, and opens a stream of every row. */
  private async writeAndStream(tx: EntityManager, label: string): Promise<Readable> {
    await tx.insert(Item, { label });
    this.probe.connectionId = await connectionIdOf(tx);
    const rows = await tx.createQueryBuilder(NumberedItem, 'row').orderBy('row.id').stream();
    this.probe.streams.push(rows);
    return rows;
  }

  @Get('file')
  async file(@Tx() tx: EntityManager) {
    const rows = await this.writeAndStream(tx, 'before a stream returned as the response');
    return new StreamableFile(rows);
  }

  @Post('throws-while-open')
  async throwsWhileOpen(@Tx() tx: EntityManager) {
    await this.writeAndStream(tx, 'before a stream, then a throw');
    throw new ConflictException('changed my mind');
  }

  @Post('query-while-open')
  async queryWhileOpen(@Tx() tx: EntityManager) {
    await this.writeAndStream(tx, 'before a stream, then a query');
    await tx.query(`INSERT INTO ${WRITES_TABLE} (label) VALUES ('while the stream is open')`);
    return { ok: true };
  }

  @Post('query-inside-loop')
  async queryInsideLoop(@Tx() tx: EntityManager) {
    const rows = await this.writeAndStream(tx, 'before iterating');
    for await (const row of rows) {
      await tx.findOneBy(Item, { label: (row as RawRow).row_label });
    }
    return { ok: true };
  }

  /** Seed 004: a query on another connection while iterating the rows of this one. */
  @Post('plain-repository-inside-loop')
  async plainRepositoryInsideLoop(@Tx() tx: EntityManager) {
    const rows = await this.writeAndStream(tx, 'before iterating');
    for await (const row of rows) {
      await this.plainWrites.findOneBy({ label: (row as RawRow).row_label });
    }
    return { ok: true };
  }

  @Post('read-to-the-end')
  async readToTheEnd(@Tx() tx: EntityManager) {
    const rows = await this.writeAndStream(tx, 'before reading every row');
    let count = 0;
    let last = '';
    for await (const row of rows) {
      count += 1;
      last = (row as RawRow).row_label;
    }
    await tx.insert(Item, { label: `read ${count} rows, the last ${last}` });
    return { count };
  }

  @Post('break-early')
  async breakEarly(@Tx() tx: EntityManager) {
    const rows = await this.writeAndStream(tx, 'before reading three rows');
    const labels: string[] = [];
    for await (const row of rows) {
      labels.push((row as RawRow).row_label);
      if (labels.length === 3) break;
    }
    await tx.insert(Item, { label: `read ${labels.join(', ')}, then closed the stream` });
    return { labels };
  }

  /** A stream whose statement fails in the database; the handler catches the error. */
  @Post('failing-stream')
  async failingStream(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'before a failing stream' });
    const rows = await tx.queryRunner!.stream(`SELECT id FROM ${ROWS_TABLE} WHERE no_such_column = 1`);
    this.probe.streams.push(rows);
    try {
      for await (const row of rows) void row;
    } catch (error) {
      this.probe.caught = error;
    }
    return { ok: true };
  }

  /** Reads one row, then waits on the test (which aborts the client meanwhile), then reads on. */
  @Post('held-while-reading')
  async heldWhileReading(@Tx() tx: EntityManager) {
    this.probe.unitState = AsyncLocalStorage.bind(() => this.host.current()?.state);
    const rows = await this.writeAndStream(tx, 'before a stream the client left');
    try {
      for await (const row of rows) {
        if (!this.probe.reading.settled) {
          this.probe.reading.resolve();
          await this.probe.release.promise;
        }
        void row;
      }
      this.probe.finished.resolve('read to the end');
    } catch (error) {
      this.probe.finished.resolve(error);
      throw error;
    }
    return { ok: true };
  }
}

/** `label-007`: sorts like its id. */
const labelOf = (id: number) => `label-${String(id).padStart(3, '0')}`;

describe.each(engines)('streams of rows on $name', (engine) => {
  const postgres = engine.name === 'postgres';
  const db = suiteObserver(engine);

  /** Whether the server connection `id` still exists. */
  async function connectionExists(id: number): Promise<boolean> {
    const rows = postgres
      ? await db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [id])
      : await db.query('SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
    return rows.length > 0;
  }

  /**
   * The rows the streams read, written once the calling describe's app has synchronized their table,
   * and removed after its tests.
   */
  function seedRows(): void {
    beforeAll(async () => {
      await db.query(`DELETE FROM ${ROWS_TABLE}`);
      const ids = Array.from({ length: ROW_COUNT }, (_, i) => i + 1);
      const values = ids.map((id) => `(${id}, '${labelOf(id)}')`).join(', ');
      await db.query(`INSERT INTO ${ROWS_TABLE} (id, label) VALUES ${values}`);
    });
    afterAll(async () => {
      await db.query(`DELETE FROM ${ROWS_TABLE}`);
    });
  }

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `streams-e2e-${engine.name}-${adapter}`;
    const sql = new RecordingSqlLogger();
    let probe: Probe;
    const begin = postgres ? 'BEGIN' : 'START TRANSACTION';

    // Before the suite's leak check (hooks run in the order they are declared): a handler the test held
    // is let go, and finishes.
    afterEach(async () => {
      probe.release.resolve();
      if (probe.reading.settled) await within(probe.finished.promise, 'the held handler finishing');
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot(
            typeormOptions(engine, { poolSize: 1, applicationName, entities: [NumberedItem, Item], logger: sql }),
          ),
          TypeOrmModule.forFeature([Item]),
          TransactionalModule.forRoot(),
        ],
        controllers: [StreamsController],
        providers: [Probe, { provide: APP_FILTER, useClass: ErrorBodyFilter }],
      }),
    });
    seedRows();

    beforeAll(() => {
      probe = testApp.get(Probe);
      probe.engine = engine.name;
    });

    beforeEach(() => {
      sql.clear();
      probe.reset();
    });

    /** The one stream the request opened: destroyed, with an OpenStreamError. */
    function expectStreamDestroyedWithOpenStreamError(): void {
      expect(probe.streams).toHaveLength(1);
      const [rows] = probe.streams;
      expect(rows.destroyed).toBe(true);
      expect(rows.errored).toBeInstanceOf(OpenStreamError);
    }

    describe('when the unit of work ends while a stream is open', () => {
      it('fails a request that returns the stream as its response at once, closes the connection, and rolls back', async () => {
        const reply = await within(call<ErrorBody>('GET', `${testApp.url}/streams/file`), 'the response');

        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('OpenStreamError');
        expect(reply.body.message).toMatch(
          /^COMMIT in the transaction of GET \/streams\/file: a stream of rows read through its connection is still open/,
        );
        expect(reply.body.message).toMatch(/A stream returned as the response \(StreamableFile, a piped Readable\)/);
        expectStreamDestroyedWithOpenStreamError();
        // Neither COMMIT nor ROLLBACK could go out on a connection busy with the stream: it was closed.
        expect(sql.transactionControl()).toEqual([begin]);
        await waitFor(async () => expect(await connectionExists(probe.connectionId)).toBe(false));
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      });

      it('closes the connection and destroys the stream when the handler throws, and answers with its error', async () => {
        const reply = await within(call<ErrorBody>('POST', `${testApp.url}/streams/throws-while-open`), 'the response');

        expect(reply.status).toBe(409);
        expect(reply.body.name).toBe('ConflictException');
        expectStreamDestroyedWithOpenStreamError();
        expect(sql.transactionControl()).toEqual([begin]);
        await waitFor(async () => expect(await connectionExists(probe.connectionId)).toBe(false));
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      });

      it('gives the connection up when the client leaves while the handler reads, and the handler then fails', async () => {
        const controller = new AbortController();
        const response = post(`${testApp.url}/streams/held-while-reading`, {}, { signal: controller.signal });
        response.catch(() => undefined);
        await within(probe.reading.promise, 'the handler reading its stream');
        expect(poolStats(testApp.dataSource).idle).toBe(0);

        controller.abort();

        // Before the handler goes on: the unit of work ended, and its connection is gone.
        await waitFor(() => expect(probe.unitState()).toBe('rolledBack'));
        await waitFor(async () => expect(await connectionExists(probe.connectionId)).toBe(false));
        await waitFor(() => expect(poolStats(testApp.dataSource)).toMatchObject({ total: 0, waiting: 0 }));
        expectStreamDestroyedWithOpenStreamError();
        probe.release.resolve();
        expect(await within(probe.finished.promise, 'the handler reading on')).toBeInstanceOf(OpenStreamError);
        expect(sql.transactionControl()).toEqual([begin]);
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      });
    });

    describe('when a statement goes through the unit of work while its stream is open', () => {
      it('refuses it at once with OpenStreamError', async () => {
        const reply = await within(call<ErrorBody>('POST', `${testApp.url}/streams/query-while-open`), 'the response');

        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('OpenStreamError');
        expect(reply.body.message).toMatch(
          /^a query in the transaction of POST \/streams\/query-while-open was refused \(at StreamsController\.queryWhileOpen .*streams\.e2e-spec\.ts:\d+/,
        );
        expect(reply.body.message).toMatch(/would wait for the stream forever/);
        // The refused INSERT never reached the database.
        expect(sql.statements().filter((statement) => /^INSERT/.test(statement))).toHaveLength(1);
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      });

      it('refuses a query made while iterating the rows, and the request rolls back', async () => {
        const reply = await within(call<ErrorBody>('POST', `${testApp.url}/streams/query-inside-loop`), 'the response');

        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('OpenStreamError');
        expect(reply.body.message).toMatch(/StreamsController\.queryInsideLoop/);
        // Leaving the loop destroyed the stream: the connection was free again for the ROLLBACK.
        expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK']);
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      });
    });

    it('catches seed 004: a plain repository queried while iterating the rows fails with NestedConnectionError, before the pool', async () => {
      const reply = await within(call<ErrorBody>('POST', `${testApp.url}/streams/plain-repository-inside-loop`), 'the response');

      expect(reply.status).toBe(500);
      expect(reply.body.name).toBe('NestedConnectionError');
      expect(reply.body.message).toMatch(
        /^Repository<Item>\.findOneBy\(\) was called during the transaction of POST \/streams\/plain-repository-inside-loop \(at StreamsController\.plainRepositoryInsideLoop /,
      );
      // Caught before it asked the pool: only the request's own statements went out.
      expect(sql.statements().filter((statement) => /^SELECT/.test(statement))).toHaveLength(2);
      expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK']);
      expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
    });

    it('commits a request whose handler closed the stream before its end (break out of for await)', async () => {
      const reply = await within(call<{ labels: string[] }>('POST', `${testApp.url}/streams/break-early`), 'the response');

      expect(reply.status).toBe(201);
      expect(reply.body.labels).toEqual([labelOf(1), labelOf(2), labelOf(3)]);
      expect(probe.streams[0].destroyed).toBe(true);
      expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
      expect(await labelsIn(db, WRITES_TABLE)).toEqual([
        'before reading three rows',
        `read ${labelOf(1)}, ${labelOf(2)}, ${labelOf(3)}, then closed the stream`,
      ]);
    });

    it('reports what the database did with a stream whose statement failed and was caught', async () => {
      const reply = await within(call<ErrorBody>('POST', `${testApp.url}/streams/failing-stream`), 'the response');

      expect(probe.caught).toBeInstanceOf(Error);
      expect(String((probe.caught as Error).message)).toMatch(/no_such_column/);
      if (postgres) {
        // The failure aborted the transaction: the unit of work fails, and nothing was written.
        expect(reply.status).toBe(500);
        expect(reply.body.name).toBe('TransactionAbortedError');
        expect(reply.body.message).toMatch(/^COMMIT in the transaction of POST \/streams\/failing-stream was refused/);
        expect(reply.body.message).toMatch(
          /an earlier statement failed \(column "no_such_column" does not exist\) and PostgreSQL aborted the transaction/,
        );
        expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK']);
        expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
      } else {
        // MariaDB undid the failed statement alone.
        expect(reply.status).toBe(201);
        expect(await labelsIn(db, WRITES_TABLE)).toEqual(['before a failing stream']);
      }
    });

    describe('streaming rows to a client from a @NoTransaction() route with its own query runner', () => {
      it('sends every row, and gives the connection back', async () => {
        const response = await within(fetch(`${testApp.url}/streams/export.ndjson?rows=1000`), 'the response');
        const lines = (await response.text()).trim().split('\n');

        expect(response.status).toBe(200);
        expect(lines).toHaveLength(1000);
        expect(lines.map((line) => Number((JSON.parse(line) as { id: number | string }).id))).toEqual(
          Array.from({ length: 1000 }, (_, i) => i + 1),
        );
        expect(await within(probe.finished.promise, 'the handler finishing')).toBe('sent every row');
        // No unit of work: no transaction was opened.
        expect(sql.transactionControl()).toEqual([]);
      });

      it('gives the connection back when the client leaves mid-download', async () => {
        const controller = new AbortController();
        const response = await within(
          fetch(`${testApp.url}/streams/export.ndjson?rows=1000000`, { signal: controller.signal }),
          'the response',
        );
        const reader = (response.body as ReadableStream<Uint8Array>).getReader();
        await reader.read();

        controller.abort();

        expect(await within(probe.finished.promise, 'the handler finishing')).toMatchObject({
          code: 'ERR_STREAM_PREMATURE_CLOSE',
        });
        expect(probe.streams[0].destroyed).toBe(true);
        // The pool of one connection serves the next request.
        const next = await within(fetch(`${testApp.url}/streams/export.ndjson?rows=3`), 'the next response');
        expect((await next.text()).trim().split('\n')).toHaveLength(3);
      });
    });

    it('commits a request that read its stream to the end, and goes on using the connection after it', async () => {
      const reply = await within(call<{ count: number }>('POST', `${testApp.url}/streams/read-to-the-end`), 'the response');

      expect(reply.status).toBe(201);
      expect(reply.body).toEqual({ count: ROW_COUNT });
      expect(probe.streams[0].errored).toBeNull();
      expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
      expect(await labelsIn(db, WRITES_TABLE)).toEqual([
        'before reading every row',
        `read ${ROW_COUNT} rows, the last ${labelOf(ROW_COUNT)}`,
      ]);
    });
  });

  describe('TransactionRunner.run()', () => {
    const applicationName = `streams-e2e-runner-${engine.name}`;
    let runner: TransactionRunner;
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => ({
        adapter: 'express',
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [NumberedItem, Item] })),
          TransactionalModule.forRoot(),
        ],
      }),
    });
    seedRows();

    beforeAll(() => {
      runner = testApp.get(TransactionRunner);
    });

    it('rejects a run whose result is a stream still open, and rolls back', async () => {
      let rows: Readable | undefined;

      const run = runner.run(async (tx) => {
        await tx.insert(Item, { label: 'before a stream returned from run()' });
        rows = await tx.createQueryBuilder(NumberedItem, 'row').stream();
        return rows;
      });

      await expect(within(run, 'run() settling')).rejects.toBeInstanceOf(OpenStreamError);
      expect(rows?.errored).toBeInstanceOf(OpenStreamError);
      expect(await labelsIn(db, WRITES_TABLE)).toEqual([]);
    });

    it('resolves a run that read its stream to the end', async () => {
      const count = await runner.run(async (tx) => {
        let read = 0;
        for await (const row of await tx.createQueryBuilder(NumberedItem, 'row').stream()) {
          void row;
          read += 1;
        }
        await tx.insert(Item, { label: `read ${read}` });
        return read;
      });

      expect(count).toBe(ROW_COUNT);
      expect(await labelsIn(db, WRITES_TABLE)).toEqual([`read ${ROW_COUNT}`]);
    });
  });
});
