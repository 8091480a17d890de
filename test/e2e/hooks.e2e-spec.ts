import { ConflictException, Controller, Post, Res } from '@nestjs/common';
import { InjectDataSource, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, Repository } from 'typeorm';
import { TransactionalModule, TransactionHost, TransactionRunner, Tx, type UnitOfWorkInfo } from '../../lib';
import type { PoolStats } from '../../lib/core/dialect';
import type { CreateAppOptions } from '../support/app';
import { type AdapterName, adapters } from '../support/app';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { rawResponse } from '../support/http';
import { latch, type Latch, yieldToOthers } from '../support/latch';
import { poolStats } from '../support/leaks';
import { RecordingNestLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

/** What the hooks of the current test saw; reset before each test. */
interface Probe {
  events: string[];
  hookEntered: Latch;
  release: Latch;
  poolInHook?: PoolStats;
  headersSentAfterWaiting?: boolean;
  currentInHook?: UnitOfWorkInfo | null;
  currentInRunner?: UnitOfWorkInfo | null;
  plainCountInHook?: number;
}

const freshProbe = (): Probe => ({ events: [], hookEntered: latch(), release: latch() });
let probe = freshProbe();

@Controller('hooks')
class HooksController {
  constructor(
    private readonly host: TransactionHost,
    private readonly runner: TransactionRunner,
    @InjectRepository(Item) private readonly plain: Repository<Item>,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {}

  @Post('awaited')
  async awaited(@Tx() tx: EntityManager, @Res({ passthrough: true }) response: unknown) {
    await tx.insert(Item, { label: 'awaited' });
    this.host.afterCommit(async () => {
      probe.poolInHook = poolStats(this.dataSource);
      probe.hookEntered.resolve();
      await probe.release.promise;
      probe.headersSentAfterWaiting = rawResponse(response).headersSent;
    });
    return { ok: true };
  }

  @Post('order')
  async order(@Tx() tx: EntityManager) {
    this.host.afterCommit(async () => {
      probe.events.push('first: start');
      await yieldToOthers();
      probe.events.push('first: end');
    });
    this.host.afterRollback(() => probe.events.push('afterRollback'));
    await tx.insert(Item, { label: 'ordered' });
    this.host.afterCommit(() => probe.events.push('second'));
    this.host.afterCommit(() => probe.events.push('third'));
    return { ok: true };
  }

  @Post('savepoints')
  async savepoints(@Tx() tx: EntityManager) {
    this.host.afterCommit(() => probe.events.push('outer, before'));
    await tx.insert(Item, { label: 'outer' });
    try {
      await tx.transaction(async (savepoint) => {
        this.host.afterCommit(() => probe.events.push('in the rolled-back savepoint'));
        await savepoint.insert(Item, { label: 'rolled-back savepoint' });
        throw new Error('undo the savepoint');
      });
    } catch {
      // The handler goes on: only the savepoint is undone.
    }
    await tx.transaction(async (savepoint) => {
      this.host.afterCommit(() => probe.events.push('in the kept savepoint'));
      await savepoint.insert(Item, { label: 'kept savepoint' });
    });
    this.host.afterCommit(() => probe.events.push('outer, after'));
    return { ok: true };
  }

  @Post('failing')
  async failing(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'committed despite the hook' });
    this.host.afterCommit(() => {
      throw new Error('the hook broke');
    });
    this.host.afterCommit(() => probe.events.push('next hook'));
    return { ok: true };
  }

  @Post('http-exception')
  async httpException(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'rolled back' });
    this.host.afterCommit(() => probe.events.push('afterCommit'));
    this.host.afterRollback(() => probe.events.push('afterRollback'));
    throw new ConflictException('already there');
  }

  @Post('fresh-work')
  async freshWork(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'from the request' });
    this.host.afterCommit(async () => {
      probe.currentInHook = this.host.current() ?? null;
      // A plain repository: outside any unit of work, so the guard has nothing to say.
      probe.plainCountInHook = await this.plain.count();
      await this.runner.run(
        async (fresh) => {
          probe.currentInRunner = this.host.current() ?? null;
          await fresh.insert(Item, { label: 'from the hook' });
        },
        { name: 'hook follow-up' },
      );
    });
    return { ok: true };
  }
}

function hooksApp(engine: Engine, adapter: AdapterName, applicationName: string, logger: RecordingNestLogger): CreateAppOptions {
  return {
    adapter,
    logger,
    imports: [
      TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] })),
      TypeOrmModule.forFeature([Item]),
      TransactionalModule.forRoot(),
    ],
    controllers: [HooksController],
  };
}

describe.each(engines)('afterCommit / afterRollback hooks on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `hooks-e2e-${engine.name}-${adapter}`;
    const logger = new RecordingNestLogger();
    // Before the leak check: a hook of a failed test still waiting for its release would hold the connection.
    afterEach(() => probe.release.resolve());
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => hooksApp(engine, adapter, applicationName, logger),
    });

    beforeEach(() => {
      probe = freshProbe();
    });

    it('runs afterCommit after the commit and the release, and holds the response until the hook is done', async () => {
      let answered = false;
      const response = fetch(`${testApp.url}/hooks/awaited`, { method: 'POST' }).then((res) => {
        answered = true;
        return res;
      });

      await probe.hookEntered.promise;
      // Committed and released before the hook runs.
      expect(await labelsIn(db, TABLE)).toEqual(['awaited']);
      expect(probe.poolInHook).toEqual({ total: 1, idle: 1, waiting: 0, max: 1 });
      // The commit is long done and visible: a response not held by the hook would be on its way by now.
      expect(answered).toBe(false);

      probe.release.resolve();
      const res = await response;

      expect(res.status).toBe(201);
      expect(probe.headersSentAfterWaiting).toBe(false);
    });
  });

  describe('over express', () => {
    const applicationName = `hooks-e2e-${engine.name}`;
    const logger = new RecordingNestLogger();
    // Before the leak check: a hook of a failed test still waiting for its release would hold the connection.
    afterEach(() => probe.release.resolve());
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => hooksApp(engine, 'express', applicationName, logger),
    });
    let host: TransactionHost;

    beforeAll(() => {
      host = testApp.get(TransactionHost);
    });

    beforeEach(() => {
      probe = freshProbe();
      logger.clear();
    });

    const post = (path: string) => fetch(`${testApp.url}${path}`, { method: 'POST' });

    it('awaits the afterCommit hooks one after another, in registration order, and skips afterRollback', async () => {
      const res = await post('/hooks/order');

      expect(res.status).toBe(201);
      expect(probe.events).toEqual(['first: start', 'first: end', 'second', 'third']);
      expect(await labelsIn(db, TABLE)).toEqual(['ordered']);
    });

    it('drops the hooks of a savepoint that rolled back and keeps the others', async () => {
      const res = await post('/hooks/savepoints');

      expect(res.status).toBe(201);
      expect(probe.events).toEqual(['outer, before', 'in the kept savepoint', 'outer, after']);
      expect(await labelsIn(db, TABLE)).toEqual(['kept savepoint', 'outer']);
    });

    it('logs a failing afterCommit hook, runs the next ones, and answers 2xx with the data committed', async () => {
      const res = await post('/hooks/failing');

      expect(res.status).toBe(201);
      expect(await labelsIn(db, TABLE)).toEqual(['committed despite the hook']);
      expect(probe.events).toEqual(['next hook']);
      const errors = logger.of('TransactionalModule').filter((entry) => entry.level === 'error');
      expect(errors).toHaveLength(1);
      expect(errors[0].message).toContain('afterCommit hook of POST /hooks/failing failed');
      expect(errors[0].message).toContain('the hook broke');
    });

    it('runs afterRollback, not afterCommit, when the handler throws an HttpException, and keeps its status', async () => {
      const res = await post('/hooks/http-exception');

      expect(res.status).toBe(409);
      expect(probe.events).toEqual(['afterRollback']);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('runs hooks outside the unit of work: TransactionRunner.run() in a hook starts fresh work, and the guard stays quiet', async () => {
      const violationsBefore = host.stats().guardViolations;

      const res = await post('/hooks/fresh-work');

      expect(res.status).toBe(201);
      expect(probe.currentInHook).toBeNull();
      expect(probe.plainCountInHook).toBe(1);
      expect(probe.currentInRunner).toEqual({ name: 'hook follow-up', state: 'open' });
      expect(await labelsIn(db, TABLE)).toEqual(['from the hook', 'from the request']);
      expect(host.stats().guardViolations).toBe(violationsBefore);
      expect(logger.of('TransactionalModule')).toEqual([]);
    });
  });
});
