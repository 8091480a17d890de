import { engines } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { observer, type Observer } from '../../test/support/observer';
import {
  type AppUnderTest,
  balances,
  countRows,
  emptyTables,
  expectAppLeakedNothing,
  openAccount,
  startApp,
  tablesOf,
} from './harness';

describe.each(engines)('POST /graphql on $name (one unit of work per operation)', (engine) => {
  const tables = tablesOf('sa_graphql_');
  let db: Observer;
  let app: AppUnderTest;

  beforeAll(async () => {
    // A pool of ONE connection: an operation whose field resolver took a second one would wait forever.
    app = await startApp(engine, tables, { variant: 'library', poolSize: 1, applicationName: `wallet-graphql-${engine.name}` });
    db = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([app?.close(), db?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(async () => {
    await expectAppLeakedNothing(app, db);
  });

  const TRANSFER =
    'mutation Transfer($from: Int!, $to: Int!, $amount: Int!) { transfer(from: $from, to: $to, amount: $amount) { id amount } }';

  it('commits the mutation’s ledger entry, credit and debit together', async () => {
    const alice = await openAccount(app, 'Alice', 1_000);
    const bob = await openAccount(app, 'Bob', 0);

    const reply = await call('POST', `${app.url}/graphql`, { query: TRANSFER, variables: { from: alice, to: bob, amount: 250 } });

    expect(reply.body).toEqual({ data: { transfer: { id: expect.any(Number), amount: 250 } } });
    expect(await balances(db, tables)).toEqual(
      new Map([
        [alice, 750],
        [bob, 250],
      ]),
    );
    expect(await countRows(db, tables.ledgerEntries)).toBe(1);
  });

  it('rolls the whole mutation back when its last write fails (an overdraft)', async () => {
    const alice = await openAccount(app, 'Alice', 100);
    const bob = await openAccount(app, 'Bob', 0);

    const reply = await call('POST', `${app.url}/graphql`, { query: TRANSFER, variables: { from: alice, to: bob, amount: 101 } });

    expect(reply.body.data).toBeNull();
    expect(reply.body.errors).toEqual([expect.objectContaining({ message: `Account ${alice} cannot cover 101 cents.` })]);
    expect(await balances(db, tables)).toEqual(
      new Map([
        [alice, 100],
        [bob, 0],
      ]),
    );
    expect(await countRows(db, tables.ledgerEntries)).toBe(0);
  });

  it('reads an account and its ledger entries (a field resolver) on one connection, for dozens of parallel queries', async () => {
    const alice = await openAccount(app, 'Alice', 1_000);
    const bob = await openAccount(app, 'Bob', 0);
    await call('POST', `${app.url}/graphql`, { query: TRANSFER, variables: { from: alice, to: bob, amount: 10 } });
    const query = 'query Account($id: Int!) { account(id: $id) { owner balance sent { amount toAccountId } } }';

    const replies = await Promise.all(
      Array.from({ length: 30 }, () => call('POST', `${app.url}/graphql`, { query, variables: { id: alice } })),
    );

    for (const reply of replies) {
      expect(reply.body).toEqual({
        data: { account: { owner: 'Alice', balance: 990, sent: [{ amount: 10, toAccountId: bob }] } },
      });
    }
  });
});
