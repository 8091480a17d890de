/**
 * A statement the unit of work accepted while it was open reaches the database before the unit's
 * ROLLBACK, never after it, where it would run in autocommit on a connection already back in the pool.
 *
 * TypeORM awaits its BeforeQuery event between taking the connection and handing the statement to
 * the driver. A subscriber holds an INSERT in exactly that gap while the unit of work ends, for both
 * ways a unit ends without the handler awaiting its statements: the client disconnects, or the handler
 * throws without awaiting a write it started. Pool of one, PostgreSQL and MariaDB.
 */
import { Body, ConflictException, Controller, Post, Req } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type BeforeQueryEvent, type EntityManager, type EntitySubscriberInterface, EventSubscriber } from 'typeorm';
import { TransactionalModule, Tx } from '../../lib/index';
import { engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { post } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { rowsWhere } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const ITEMS = tableOf(Item);
const HELD_INSERT = new RegExp(`^INSERT INTO [\`"]${ITEMS}[\`"]`);

/** While set, the next INSERT into the items table stops in TypeORM's BeforeQuery gap until released. */
let gate: { reached: Latch; release: Latch } | undefined;

@EventSubscriber()
class HoldInsert implements EntitySubscriberInterface {
  async beforeQuery(event: BeforeQueryEvent): Promise<void> {
    const held = gate;
    if (held === undefined || !HELD_INSERT.test(event.query)) return;
    gate = undefined;
    held.reached.resolve();
    await held.release.promise;
  }
}

/** Resolved when the server has seen the client's connection close. */
let serverSawClose: Latch | undefined;

@Controller('ordering')
class OrderingController {
  @Post('wait')
  async insertThenWait(
    @Body() body: { marker: string },
    @Tx() tx: EntityManager,
    @Req() request: IncomingMessage & { res?: ServerResponse },
  ) {
    const closed = serverSawClose;
    request.res?.once('close', () => closed?.resolve());
    await tx.insert(Item, { label: body.marker });
    return 'inserted';
  }

  @Post('throw')
  async insertWithoutAwaitThenThrow(@Body() body: { marker: string }, @Tx() tx: EntityManager) {
    // Started, not awaited: the statement is in flight when the handler's error ends the unit of work.
    tx.insert(Item, { label: body.marker }).catch(() => undefined);
    throw new ConflictException('changed my mind');
  }
}

describe.each(engines)('statements in flight when a unit of work ends, on $name', (engine) => {
  const applicationName = `ordering-${engine.name}`;
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    leakCheck: { mariadb: 'app-connections' },
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot({
          ...typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] }),
          subscribers: [HoldInsert],
        }),
        TransactionalModule.forRoot(),
      ],
      controllers: [OrderingController],
    }),
  });

  afterEach(() => {
    gate = undefined;
    serverSawClose = undefined;
  });

  it('rolls back a statement held in flight when the client disconnects, instead of letting it autocommit', async () => {
    const marker = `abort-${engine.name}-${Date.now()}`;
    const held = { reached: latch(), release: latch() };
    gate = held;
    serverSawClose = latch();
    const client = new AbortController();
    const request = post(`${testApp.url}/ordering/wait`, { marker }, { signal: client.signal }).catch((error: unknown) => error);

    await held.reached.promise;
    client.abort();
    await serverSawClose.promise;
    held.release.resolve();

    expect(((await request) as { name?: string }).name).toBe('AbortError');
    await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName }, { mariadb: 'app-connections' });
    expect(await rowsWhere(db, ITEMS, 'label', marker)).toEqual([]);
  });

  it('rolls back a write the handler started but did not await before throwing', async () => {
    const marker = `throw-${engine.name}-${Date.now()}`;
    const held = { reached: latch(), release: latch() };
    gate = held;
    const response = post(`${testApp.url}/ordering/throw`, { marker });

    await held.reached.promise;
    held.release.resolve();

    expect((await response).status).toBe(409);
    await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName }, { mariadb: 'app-connections' });
    expect(await rowsWhere(db, ITEMS, 'label', marker)).toEqual([]);
  });
});
