/**
 * The recipes of docs/adoption.md, run: `subscribeOnce()` (a statement that may fail, in a savepoint)
 * and `UniqueViolationFilter` (a unique violation answered with 409) are test/examples/ files that
 * `npm run docs:check` keeps byte-identical to the guide's blocks.
 */
import { Body, Controller, HttpCode, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { EntityManager } from 'typeorm';
import { TransactionalModule, Tx } from '../../lib';
import { subscribeOnce, Subscriber } from '../examples/subscribe-once';
import { uniqueViolationFilter } from '../examples/unique-violation.filter';
import { engines, typeormOptions } from '../support/databases';
import { postJson } from '../support/http';
import { suiteApp, suiteObserver } from '../support/suite';

const EMAIL = 'adoption-recipes@example.com';

@Controller('recipes')
class RecipesController {
  /** A plain insert: the second time, a unique violation that propagates. */
  @Post('insert')
  @HttpCode(200)
  async insert(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<{ ok: true }> {
    await tx.insert(Subscriber, { email: body.email });
    return { ok: true };
  }

  /** The autocommit habit: insert, swallow the failure, go on with the transaction. */
  @Post('insert-and-go-on')
  @HttpCode(200)
  async insertAndGoOn(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<{ count: number }> {
    await tx.insert(Subscriber, { email: body.email }).catch(() => undefined);
    return { count: await tx.countBy(Subscriber, { email: body.email }) };
  }

  /** The guide's fix: the insert in a savepoint of its own. */
  @Post('subscribe-once')
  @HttpCode(200)
  async subscribeOnce(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<{ count: number }> {
    await subscribeOnce(tx, body.email);
    await subscribeOnce(tx, body.email);
    return { count: await tx.countBy(Subscriber, { email: body.email }) };
  }
}

describe.each(engines)('the adoption recipes on $name', (engine) => {
  const applicationName = 'adoption-recipes';
  const db = suiteObserver(engine);
  // No `tables`: the guide's Subscriber entity names no table (tableOf() needs one); each test's address is deleted below.
  const app = suiteApp(db, {
    applicationName,
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Subscriber] })),
        TransactionalModule.forRoot(),
      ],
      controllers: [RecipesController],
      providers: [uniqueViolationFilter],
    }),
  });
  let url: string;

  beforeAll(() => {
    url = app.url;
  });

  const deleteAddress = async () => {
    await db.query(`DELETE FROM subscriber WHERE email = '${EMAIL}'`);
  };
  // Before each test (a row an interrupted run left) and after it (the table is left as found).
  beforeEach(deleteAddress);
  afterEach(deleteAddress);

  async function rows(): Promise<number> {
    const [row] = await db.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM subscriber WHERE email = '${EMAIL}'`);
    return Number(row.n);
  }

  it('UniqueViolationFilter answers a unique violation with 409, after the rollback', async () => {
    expect((await postJson(`${url}/recipes/insert`, { email: EMAIL })).status).toBe(200);

    const again = await postJson<{ statusCode: number; message: string }>(`${url}/recipes/insert`, { email: EMAIL });

    expect(again).toEqual({ status: 409, body: { statusCode: 409, message: 'It exists already.', error: 'Conflict' } });
    expect(await rows()).toBe(1);
  });

  it('a caught violation: on PostgreSQL the transaction is aborted (409 through the filter), on MariaDB it goes on', async () => {
    await postJson(`${url}/recipes/insert`, { email: EMAIL });

    const reply = await postJson<{ count?: number; statusCode?: number }>(`${url}/recipes/insert-and-go-on`, { email: EMAIL });

    if (engine.name === 'postgres') {
      // The count after the caught failure failed with TransactionAbortedError; its cause is the violation.
      expect(reply.status).toBe(409);
    } else {
      expect(reply).toEqual({ status: 200, body: { count: 1 } });
    }
  });

  it('subscribeOnce() lets the duplicate fail in its savepoint, and the transaction goes on and commits', async () => {
    const reply = await postJson(`${url}/recipes/subscribe-once`, { email: EMAIL });

    expect(reply).toEqual({ status: 200, body: { count: 1 } });
    expect(await rows()).toBe(1);
  });
});
