/**
 * The README's example, run: test/examples/ holds its files, which test/unit/docs.spec.ts (and
 * `npm run docs:check`) keep byte-identical to the README's blocks. Its AppModule is booted as it is
 * (test/support/readme-app.ts), on PostgreSQL and MariaDB.
 */
import { Body, ConflictException, Controller, type INestApplication, Post } from '@nestjs/common';
import { getDataSourceToken, InjectDataSource } from '@nestjs/typeorm';
import { DataSource, EntityManager } from 'typeorm';
import { NestedConnectionError, TransactionHost, Tx } from '../../lib';
import { ConnectionAudit } from '../../lib/testing';
import { Account } from '../examples/account.entity';
import { engines } from '../support/databases';
import { postJson } from '../support/http';
import { poolStats } from '../support/leaks';
import { bootReadmeApp } from '../support/readme-app';
import { suiteObserver } from '../support/suite';
import { waitFor } from '../support/wait-for';

/**
 * What the README says of a plain repository in its example: one from the data source, as
 * `@InjectRepository(Account)` would give, beside the example's controllers.
 */
@Controller('plain-accounts')
class PlainAccountsController {
  constructor(@InjectDataSource() private readonly dataSource: DataSource) {}

  /** The plain repository first: the request's unit of work holds no connection yet. */
  @Post('credit-then-fail')
  async creditThenFail(@Body() body: { id: number }): Promise<never> {
    await this.dataSource.getRepository(Account).increment({ id: body.id }, 'balance', 1);
    throw new ConflictException('failed after the write');
  }

  /** The plain repository once the unit of work holds its connection. */
  @Post('read-then-credit')
  async readThenCredit(@Body() body: { id: number }, @Tx() tx: EntityManager): Promise<{ refused: boolean; message: string }> {
    await tx.findOneByOrFail(Account, { id: body.id });
    try {
      await this.dataSource.getRepository(Account).increment({ id: body.id }, 'balance', 1);
      return { refused: false, message: '' };
    } catch (error) {
      return { refused: error instanceof NestedConnectionError, message: (error as Error).message };
    }
  }
}

describe.each(engines)("the README's example on $name", (engine) => {
  const db = suiteObserver(engine);
  let app: INestApplication;
  let url: string;
  let audit: ConnectionAudit;

  beforeAll(async () => {
    ({ app, url } = await bootReadmeApp(engine, { controllers: [PlainAccountsController] }));
    audit = ConnectionAudit.attach(app.get(DataSource));
  });

  beforeEach(() => audit.reset());

  afterAll(async () => {
    audit?.detach();
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

  it('runs a plain repository used before the request holds its connection outside the transaction, and the audit lists it', async () => {
    const id = await open(100);

    const reply = await postJson(`${url}/plain-accounts/credit-then-fail`, { id });

    expect(reply.status).toBe(409);
    expect(await balances(id)).toEqual([101]); // not rolled back with the request
    expect(audit.plainAcquisitions()).toEqual([
      expect.objectContaining({
        unit: 'POST /plain-accounts/credit-then-fail',
        site: expect.stringMatching(/PlainAccountsController\.creditThenFail \(.*readme-example\.e2e-spec\.ts:\d+:\d+\)/),
        whileHolding: false,
      }),
    ]);
  });

  it('refuses a plain repository once the request holds its connection: NestedConnectionError naming the call site', async () => {
    const id = await open(100);

    const reply = await postJson<{ refused: boolean; message: string }>(`${url}/plain-accounts/read-then-credit`, { id });

    expect(reply.status).toBe(201);
    expect(reply.body.refused).toBe(true);
    expect(reply.body.message).toMatch(
      /^Repository<Account>\.increment\(\) was called during the transaction of POST \/plain-accounts\/read-then-credit \(at PlainAccountsController\.readThenCredit \(.*readme-example\.e2e-spec\.ts:\d+:\d+\)\)/,
    );
    expect(await balances(id)).toEqual([100]);
  });
});
