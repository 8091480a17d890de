/**
 * The README's example, run: test/readme/ holds its files, which test/unit/docs.spec.ts (and
 * `npm run docs:check`) keep byte-identical to the README's blocks. Its AppModule is booted as it is:
 * on PostgreSQL with the README's own TypeOrmModule.forRoot() (DATABASE_URL), and on MariaDB with the
 * data source replaced by one on MariaDB, since the README's forRoot() names PostgreSQL.
 */
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { getDataSourceToken } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { TransactionHost } from '../../lib';
import { engines, postgresUrl, typeormOptions, type Engine } from '../support/databases';
import { postJson } from '../support/http';
import { poolStats } from '../support/leaks';
import { observer, type Observer } from '../support/observer';
import { waitFor } from '../support/wait-for';

/** Boots the README's AppModule, imported only now: its forRoot() reads DATABASE_URL when the module loads. */
async function bootReadmeApp(engine: Engine): Promise<INestApplication> {
  process.env.DATABASE_URL = postgresUrl();
  const { AppModule } = await import('../readme/app.module');
  const { Account } = await import('../readme/account.entity');
  let builder = Test.createTestingModule({ imports: [AppModule] });
  if (engine.name === 'mariadb') {
    const options = typeormOptions(engine, { poolSize: 10, applicationName: 'readme-example', entities: [Account] });
    builder = builder.overrideProvider(getDataSourceToken()).useFactory({ factory: () => new DataSource(options).initialize() });
  }
  const app = (await builder.compile()).createNestApplication({ logger: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

describe.each(engines)("the README's example on $name", (engine) => {
  let app: INestApplication;
  let url: string;
  let db: Observer;

  beforeAll(async () => {
    app = await bootReadmeApp(engine);
    url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
    db = await observer(engine);
  });

  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  afterEach(async () => {
    // Nothing left open: no unit of work, no connection held, the pool idle.
    await waitFor(() => {
      const stats = app.get(TransactionHost).stats();
      expect({ open: stats.openUnitsOfWork, held: stats.connectionsHeld }).toEqual({ open: 0, held: 0 });
      const pool = poolStats(app.get<DataSource>(getDataSourceToken()));
      expect({ idle: pool.idle, waiting: pool.waiting }).toEqual({ idle: pool.total, waiting: 0 });
    });
  });

  async function balances(...ids: number[]): Promise<number[]> {
    const placeholders = ids.map((_, index) => (engine.name === 'postgres' ? `$${index + 1}` : '?')).join(', ');
    const rows = await db.query<{ id: number; balance: number }>(
      `SELECT id, balance FROM account WHERE id IN (${placeholders}) ORDER BY id`,
      ids,
    );
    return ids.map((id) => Number(rows.find((row) => Number(row.id) === id)?.balance));
  }

  async function open(balance: number): Promise<number> {
    const reply = await postJson<{ id: number; balance: number }>(`${url}/accounts`, { balance });
    expect(reply.status).toBe(201);
    return reply.body.id;
  }

  it('opens an account through @Tx()', async () => {
    const id = await open(100);

    expect(await balances(id)).toEqual([100]);
  });

  it('commits a transfer: both updates are in the database when the response arrives', async () => {
    const [from, to] = [await open(100), await open(0)];

    const reply = await postJson(`${url}/accounts/transfers`, { from, to, amount: 30 });

    expect(reply.status).toBe(201);
    expect(await balances(from, to)).toEqual([70, 30]);
  });

  it('rolls back both updates when the service throws after them (409)', async () => {
    const [from, to] = [await open(10), await open(0)];

    const reply = await postJson<{ message: string }>(`${url}/accounts/transfers`, { from, to, amount: 30 });

    expect(reply.status).toBe(409);
    expect(reply.body.message).toBe('Insufficient funds');
    expect(await balances(from, to)).toEqual([10, 0]);
  });
});
