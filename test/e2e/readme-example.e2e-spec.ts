/**
 * The README's example, run: test/examples/ holds its files, which test/unit/docs.spec.ts (and
 * `npm run docs:check`) keep byte-identical to the README's blocks. Its AppModule is booted as it is
 * (test/support/readme-app.ts), on PostgreSQL and MariaDB.
 */
import type { INestApplication } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { TransactionHost } from '../../lib';
import { engines } from '../support/databases';
import { postJson } from '../support/http';
import { poolStats } from '../support/leaks';
import { bootReadmeApp } from '../support/readme-app';
import { suiteObserver } from '../support/suite';
import { waitFor } from '../support/wait-for';

describe.each(engines)("the README's example on $name", (engine) => {
  const db = suiteObserver(engine);
  let app: INestApplication;
  let url: string;

  beforeAll(async () => {
    ({ app, url } = await bootReadmeApp(engine));
  });

  afterAll(async () => {
    await app?.close();
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
