/**
 * The guard reports hold-and-wait only: a second pooled connection taken while the unit of work holds
 * one (or is taking one). An app not yet converted, whose code reads and writes through plain
 * repositories and the data source, works unchanged with `TransactionalModule.forRoot()` added; so do
 * health checks. `tx.withRepository(repository)` runs on the unit's connection. `ConnectionAudit`
 * lists what is left to convert.
 */
import {
  Body,
  type CanActivate,
  Controller,
  Delete,
  Get,
  Injectable,
  NotFoundException,
  Param,
  ParseIntPipe,
  Patch,
  type PipeTransform,
  Post,
  Query,
  ServiceUnavailableException,
  UseGuards,
} from '@nestjs/common';
import { InjectDataSource, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, Repository } from 'typeorm';
import { NestedConnectionError, TransactionalModule, TransactionHost, Tx } from '../../lib';
import { ConnectionAudit } from '../../lib/testing';
import { adapters } from '../support/app';
import { ErrorRecorder, recordingFilterProviders, siteAt } from '../support/bug-zoo';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Article, tableOf } from '../support/entities';
import { call, postJson } from '../support/http';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Article);
const CONCURRENT_REQUESTS = 48;

// ---------------------------------------------------------------------------------------------
// An app not yet converted: the service and controller of a typical NestJS + TypeORM boilerplate

@Injectable()
class ArticlesService {
  constructor(
    @InjectRepository(Article) private readonly articles: Repository<Article>,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {}

  findAll(author: string): Promise<Article[]> {
    return this.articles.find({ where: { author }, order: { id: 'ASC' } }); // adoption:find-all
  }

  async findOne(id: number): Promise<Article> {
    const article = await this.articles.findOneBy({ id });
    if (article === null) throw new NotFoundException(`article ${id} not found`);
    return article;
  }

  create(title: string, author: string): Promise<Article> {
    // save() opens TypeORM's own transaction, on a connection of its own.
    return this.articles.save(this.articles.create({ title, author }));
  }

  async rename(id: number, title: string): Promise<Article> {
    await this.articles.update({ id }, { title });
    return this.findOne(id);
  }

  async remove(id: number): Promise<void> {
    await this.articles.delete({ id });
  }

  /** Two plain reads at once: two connections, neither waiting for the other. */
  async page(author: string): Promise<{ items: number; total: number }> {
    const [items, total] = await Promise.all([
      this.articles.find({ where: { author }, take: 5 }),
      this.articles.countBy({ author }),
    ]);
    return { items: items.length, total };
  }

  async stats(author: string): Promise<{ total: number }> {
    const param = this.dataSource.options.type === 'postgres' ? '$1' : '?';
    const [row] = await this.dataSource.query(`SELECT COUNT(*) AS n FROM ${TABLE} WHERE author = ${param}`, [author]); // adoption:stats
    return { total: Number(row.n) };
  }
}

@Controller('articles')
class ArticlesController {
  constructor(private readonly articles: ArticlesService) {}

  @Get()
  findAll(@Query('author') author: string) {
    return this.articles.findAll(author);
  }

  @Get('page')
  page(@Query('author') author: string) {
    return this.articles.page(author);
  }

  @Get('stats')
  stats(@Query('author') author: string) {
    return this.articles.stats(author);
  }

  @Get(':id')
  findOne(@Param('id', ParseIntPipe) id: number) {
    return this.articles.findOne(id);
  }

  @Post()
  create(@Body() body: { title: string; author: string }) {
    return this.articles.create(body.title, body.author);
  }

  @Patch(':id')
  rename(@Param('id', ParseIntPipe) id: number, @Body() body: { title: string }) {
    return this.articles.rename(id, body.title);
  }

  @Delete(':id')
  remove(@Param('id', ParseIntPipe) id: number) {
    return this.articles.remove(id);
  }
}

// ---------------------------------------------------------------------------------------------
// A health check as @nestjs/terminus's TypeORM indicator does it: SELECT 1 on the data source

@Injectable()
class DatabasePing {
  constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

  async ping(): Promise<'up'> {
    await this.dataSource.query('SELECT 1');
    return 'up';
  }
}

@Injectable()
class PingGuard implements CanActivate {
  constructor(private readonly db: DatabasePing) {}

  async canActivate(): Promise<boolean> {
    return (await this.db.ping()) === 'up';
  }
}

@Injectable()
class PingPipe implements PipeTransform {
  constructor(private readonly db: DatabasePing) {}

  async transform(value: unknown): Promise<unknown> {
    await this.db.ping();
    return value;
  }
}

@Controller('health')
class HealthController {
  constructor(private readonly db: DatabasePing) {}

  @Get()
  @UseGuards(PingGuard)
  async check(@Query('verbose', PingPipe) _verbose: unknown) {
    try {
      return { status: 'ok', info: { database: { status: await this.db.ping() } } };
    } catch (error) {
      throw new ServiceUnavailableException({ status: 'error', error: { database: { status: 'down', message: String(error) } } });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Half converted: plain repositories beside the unit of work

@Controller('mixed')
class MixedController {
  constructor(
    @InjectRepository(Article) private readonly articles: Repository<Article>,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly host: TransactionHost,
  ) {}

  @Post('read-write-read')
  async readWriteRead(@Body() body: { title: string }, @Tx() tx: EntityManager) {
    const before = await this.articles.countBy({ author: 'mixed' }); // adoption:plain-before
    await tx.insert(Article, { title: body.title, author: 'mixed' }); // adoption:holds
    const after = await this.articles.countBy({ author: 'mixed' }); // adoption:plain-after
    return { before, after };
  }

  /** `tx.withRepository()` of the injected repository: TypeORM's own idiom, on the unit's connection. */
  @Post('with-repository')
  async withRepository(@Body() body: { title: string }, @Tx() tx: EntityManager) {
    const articles = tx.withRepository(this.articles);
    await articles.save(articles.create({ title: body.title, author: 'converted' }));
    const seen = await articles.countBy({ author: 'converted' });
    await tx.insert(Article, { title: `${body.title}/tx`, author: 'converted' });
    const seenAfter = await tx.withRepository(this.articles).countBy({ author: 'converted' });
    await tx.transaction((inner) =>
      inner.withRepository(this.articles).insert({ title: `${body.title}/savepoint`, author: 'converted' }),
    );
    const viaHost = await this.host.manager().withRepository(this.articles).countBy({ author: 'converted' });
    return { seen, seenAfter, viaHost };
  }

  /** The unit of work asks the pool, and before it answers, a plain query asks too. */
  @Post('while-taking')
  async whileTaking(@Tx() tx: EntityManager) {
    await Promise.all([tx.query('SELECT 1 AS one'), this.dataSource.query('SELECT 2 AS two')]); // adoption:while-taking
    return { ok: true };
  }

  /** A plain query asks the pool first, then the unit of work: the plain one holds nothing of the unit's. */
  @Post('plain-then-taking')
  async plainThenTaking(@Tx() tx: EntityManager) {
    const [plain, own] = await Promise.all([this.dataSource.query('SELECT 2 AS two'), tx.query('SELECT 1 AS one')]);
    return { rows: plain.length + own.length };
  }
}

describe.each(engines)('the guard without false alarms on $name', (engine: Engine) => {
  const db = suiteObserver(engine);
  const q = (sql: string) => (engine.name === 'postgres' ? sql : sql.replace(/\$\d+/g, '?'));
  const titlesBy = async (author: string) =>
    (await db.query<{ title: string }>(q(`SELECT title FROM ${TABLE} WHERE author = $1 ORDER BY title`), [author])).map(
      (r) => r.title,
    );

  describe.each(adapters)("with forRoot() added and the default guard ('throw'), on a pool of 1, on %s", (adapter) => {
    const applicationName = `guard-adoption-${adapter}`;
    const logger = new RecordingNestLogger();
    let host: TransactionHost;
    let recorder: ErrorRecorder;
    let audit: ConnectionAudit;
    const url = (path: string) => `${testApp.url}${path}`;

    // Before the app closes.
    afterAll(() => {
      audit?.detach();
    });

    // A long acquisition timeout: requests queue for the one connection, and a deadlock would still fail the test.
    const timeout = engine.name === 'postgres' ? { connectTimeoutMS: 30_000 } : { connectTimeout: 30_000 };
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Article],
      app: () => ({
        adapter,
        logger,
        imports: [
          TypeOrmModule.forRoot({ ...typeormOptions(engine, { poolSize: 1, applicationName, entities: [Article] }), ...timeout }),
          TransactionalModule.forRoot(),
          TypeOrmModule.forFeature([Article]),
        ],
        controllers: [ArticlesController, HealthController, MixedController],
        providers: [ArticlesService, DatabasePing, PingGuard, PingPipe, ...recordingFilterProviders],
      }),
    });

    beforeAll(() => {
      host = testApp.get(TransactionHost);
      recorder = testApp.get(ErrorRecorder);
      audit = ConnectionAudit.attach(testApp.dataSource);
    });

    /** Violations counted since the test began. */
    let violationsBefore = 0;
    const violations = () => host.stats().guardViolations - violationsBefore;

    beforeEach(() => {
      audit.reset();
      logger.clear();
      recorder.clear();
      violationsBefore = host.stats().guardViolations;
    });

    describe('an app not yet converted (plain repositories and dataSource.query only)', () => {
      it(`serves ${CONCURRENT_REQUESTS} concurrent requests over every route, with no violation counted or logged`, async () => {
        const author = `${adapter}-crowd`;
        const seeded = await postJson<Article>(url('/articles'), { title: 'seed', author });
        expect(seeded.status).toBe(201);

        const routes = [
          () => call('GET', url(`/articles?author=${author}`)),
          () => call('GET', url(`/articles/${seeded.body.id}`)),
          () => call('GET', url(`/articles/page?author=${author}`)),
          () => call('GET', url(`/articles/stats?author=${author}`)),
          () => call('PATCH', url(`/articles/${seeded.body.id}`), { title: 'seed' }),
        ];
        const responses = await Promise.all(
          Array.from({ length: CONCURRENT_REQUESTS }, (_, i) =>
            i % 6 === 5 ? postJson(url('/articles'), { title: `crowd-${i}`, author }) : routes[i % 6](),
          ),
        );

        expect(recorder.errors).toEqual([]);
        expect(responses.map((r) => r.status)).toEqual(responses.map((_, i) => (i % 6 === 5 ? 201 : 200)));
        expect(violations()).toBe(0);
        expect(logger.library()).toEqual([]);
        const created = Array.from({ length: CONCURRENT_REQUESTS }, (_, i) => i).filter((i) => i % 6 === 5);
        expect(await titlesBy(author)).toEqual(['seed', ...created.map((i) => `crowd-${i}`)].sort());
      });

      it('answers 404 from a plain repository, and deletes through one', async () => {
        const { body } = await postJson<Article>(url('/articles'), { title: 'doomed', author: `${adapter}-delete` });

        expect((await call('DELETE', url(`/articles/${body.id}`))).status).toBe(200);
        expect((await call('GET', url(`/articles/${body.id}`))).status).toBe(404);
        expect(await titlesBy(`${adapter}-delete`)).toEqual([]);
        expect(recorder.errors).toEqual([expect.any(NotFoundException)]);
        expect(violations()).toBe(0);
      });

      it('lists each plain call site with its routes in ConnectionAudit.checklist(), none while holding', async () => {
        const author = `${adapter}-audit`;
        for (let i = 0; i < 3; i++) expect((await call('GET', url(`/articles?author=${author}`))).status).toBe(200);
        expect((await call('GET', url(`/articles/stats?author=${author}`))).status).toBe(200);

        const plain = audit.plainAcquisitions();
        expect(plain).toHaveLength(4);
        expect(plain.every((p) => !p.whileHolding)).toBe(true);
        expect(plain.map((p) => p.unit)).toEqual(['GET /articles', 'GET /articles', 'GET /articles', 'GET /articles/stats']);
        const lines = audit.checklist().split('\n');
        expect(lines).toHaveLength(2);
        expect(lines[0]).toMatch(
          new RegExp(
            `^- \\[ \\] ${siteAt('ArticlesService.findAll', 'adoption:find-all', __filename).source}: GET /articles \\(3\\)$`,
          ),
        );
        expect(lines[1]).toMatch(
          new RegExp(
            `^- \\[ \\] ${siteAt('ArticlesService.stats', 'adoption:stats', __filename).source}: GET /articles/stats \\(1\\)$`,
          ),
        );
        expect(() => audit.assertNoPlainAcquisitions()).toThrow(
          /^2 call site\(s\) took pooled connections inside units of work, outside their transactions: /,
        );
        // One connection per unit all the same: the strict check of one connection per unit passes.
        expect(() => audit.assertOneConnectionPerUnit()).not.toThrow();
      });
    });

    describe('a health check pinging the database in a guard, a pipe and the handler', () => {
      it('answers up', async () => {
        const response = await call('GET', url('/health?verbose=1'));

        expect(response).toEqual({ status: 200, body: { status: 'ok', info: { database: { status: 'up' } } } });
        expect(violations()).toBe(0);
        expect(logger.library()).toEqual([]);
      });
    });

    describe('a route that reads through a plain repository, writes through @Tx(), then reads again', () => {
      it('lets the first read through and fails the second, naming where the unit took its connection', async () => {
        const response = await postJson(url('/mixed/read-write-read'), { title: 'mixed' });

        expect(response).toEqual({ status: 500, body: { statusCode: 500, error: 'NestedConnectionError' } });
        expect(recorder.errors).toHaveLength(1);
        const { message } = recorder.errors[0] as Error;
        expect(recorder.errors[0]).toBeInstanceOf(NestedConnectionError);
        expect(message).toContain(
          'Repository<Article>.countBy() was called during the transaction of POST /mixed/read-write-read (at ',
        );
        expect(message).toMatch(siteAt('MixedController.readWriteRead', 'adoption:plain-after', __filename));
        expect(message).toMatch(
          new RegExp(
            `It would take a second pooled connection while this unit of work holds one \\(taken at ${siteAt('MixedController.readWriteRead', 'adoption:holds', __filename).source}`,
          ),
        );
        expect(message).toContain('which deadlocks the pool under load.');
        // Only the second read is a violation; the audit lists the first (the second never reached the pool).
        expect(violations()).toBe(1);
        expect(audit.plainAcquisitions()).toEqual([
          {
            unit: 'POST /mixed/read-write-read',
            site: expect.stringMatching(siteAt('MixedController.readWriteRead', 'adoption:plain-before', __filename)),
            whileHolding: false,
          },
        ]);
        expect(await titlesBy('mixed')).toEqual([]);
      });
    });

    describe('tx.withRepository(injected repository)', () => {
      it("runs on the unit's connection, in a savepoint too, with nothing reported", async () => {
        const response = await postJson(url('/mixed/with-repository'), { title: 'w' });

        // Each count saw the unit's own uncommitted rows: the same connection.
        expect(response).toEqual({ status: 201, body: { seen: 1, seenAfter: 2, viaHost: 3 } });
        expect(recorder.errors).toEqual([]);
        expect(violations()).toBe(0);
        expect(logger.library()).toEqual([]);
        expect(audit.plainAcquisitions()).toEqual([]);
        expect(audit.units()).toEqual([
          expect.objectContaining({ name: 'POST /mixed/with-repository', acquisitions: 1, maxHeld: 1 }),
        ]);
        expect(() => audit.assertNoPlainAcquisitions()).not.toThrow();
        expect(await titlesBy('converted')).toEqual(['w', 'w/savepoint', 'w/tx']);
      });
    });

    describe('a plain query started together with the unit of work', () => {
      it('fails when the unit of work asked the pool first, saying it is taking its connection', async () => {
        const response = await postJson(url('/mixed/while-taking'));

        expect(response.status).toBe(500);
        const { message } = recorder.errors[0] as Error;
        expect(recorder.errors[0]).toBeInstanceOf(NestedConnectionError);
        expect(message).toMatch(siteAt('MixedController.whileTaking', 'adoption:while-taking', __filename));
        expect(message).toContain(
          'It would take a second pooled connection while this unit of work is taking one (a query of it is waiting for the pool at the same time), which deadlocks the pool under load.',
        );
      });

      it('goes through when the plain query asked first: the unit of work waits for a connection that is given back', async () => {
        const response = await postJson(url('/mixed/plain-then-taking'));

        expect(response).toEqual({ status: 201, body: { rows: 2 } });
        expect(recorder.errors).toEqual([]);
        expect(violations()).toBe(0);
      });
    });
  });
});
