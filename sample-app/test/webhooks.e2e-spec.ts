import { ConnectionAudit } from 'nestjs-request-transaction/testing';
import { postgresEngine } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { observer, type Observer } from '../../test/support/observer';
import { type AppUnderTest, tablesOf, countRows, emptyTables, expectAppLeakedNothing, startApp } from './harness';

const URL_WITH_SECRET = 'https://hooks.example.com/wallet?token=s3cr3t';

describe('webhooks (seed 000: a query on a second connection inside a transaction)', () => {
  const engine = postgresEngine;
  const tables = tablesOf('sa_webhook_');
  let db: Observer;
  let library: AppUnderTest;
  let naive: AppUnderTest;

  beforeAll(async () => {
    // A pool of ONE connection: a request that needs a second one cannot get it.
    library = await startApp(engine, tables, { variant: 'library', poolSize: 1, applicationName: 'wallet-webhooks-library' });
    naive = await startApp(engine, tables, {
      variant: 'naive',
      poolSize: 1,
      acquireTimeoutMs: 500,
      applicationName: 'wallet-webhooks-naive',
    });
    db = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([library?.close(), naive?.close(), db?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(async () => {
    await expectAppLeakedNothing(library, db);
    await expectAppLeakedNothing(naive, db);
  });

  async function registerWebhook(): Promise<number> {
    const reply = await call<{ id: number }>('POST', `${library.url}/webhooks`, { url: URL_WITH_SECRET });
    expect(reply.status).toBe(201);
    return reply.body.id;
  }

  it('stores the URL encrypted and reads it back decrypted', async () => {
    const id = await registerWebhook();

    const [stored] = await db.query<{ encryptedUrl: string }>(`SELECT "encryptedUrl" FROM ${tables.webhooks} WHERE id = $1`, [
      id,
    ]);
    expect(stored.encryptedUrl).not.toContain('example.com');
    expect(stored.encryptedUrl).not.toContain('s3cr3t');
    expect(await call('GET', `${library.url}/webhooks/${id}`)).toEqual({ status: 200, body: { id, url: URL_WITH_SECRET } });
  });

  describe('a delivery (library variant)', () => {
    it('queues the event and decrypts the URL in the request transaction: one connection per request', async () => {
      const id = await registerWebhook();
      const audit = ConnectionAudit.attach(library.dataSource);
      try {
        const replies = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            call('POST', `${library.url}/webhooks/${id}/deliveries`, { event: `transfer.created.${i}` }),
          ),
        );

        expect(replies.map((r) => r.status)).toEqual(Array(20).fill(201));
        expect(replies[0].body).toMatchObject({ webhookId: id, url: URL_WITH_SECRET });
        audit.assertOneConnectionPerUnit();
        expect(audit.units().filter((unit) => unit.name === 'POST /webhooks/:id/deliveries')).toHaveLength(20);
      } finally {
        audit.detach();
      }
      expect(await countRows(db, tables.deliveries)).toBe(20);
    });

    it('answers 404 for an unknown webhook and rolls back the queued delivery', async () => {
      const reply = await call('POST', `${library.url}/webhooks/999/deliveries`, { event: 'transfer.created' });

      expect(reply.status).toBe(404);
      expect(reply.body.message).toBe('Webhook 999 does not exist.');
      expect(await countRows(db, tables.deliveries)).toBe(0);
    });

    it.each([
      ['POST /webhooks', 'webhooks', { url: 'ftp://example.com' }, 'url must be an http:// or https:// URL'],
      ['POST /webhooks', 'webhooks', {}, 'url must be a string'],
      [
        'POST /webhooks/1/deliveries',
        'webhooks/1/deliveries',
        { event: 'Transfer Created' },
        'event must be an event name like transfer.created',
      ],
    ])('answers 400 to bad input on %s, writing nothing', async (_route, path, body, problem) => {
      const reply = await call('POST', `${library.url}/${path}`, body);

      expect(reply).toEqual({ status: 400, body: { statusCode: 400, error: 'Bad Request', message: [problem] } });
      expect(await countRows(db, tables.webhooks)).toBe(0);
      expect(await countRows(db, tables.deliveries)).toBe(0);
    });
  });

  describe('a delivery written naively', () => {
    it('waits for a second connection it cannot get, fails with a 503, and writes nothing', async () => {
      const id = await registerWebhook();

      const reply = await call('POST', `${naive.url}/webhooks/${id}/deliveries`, { event: 'transfer.created' });

      expect(reply.status).toBe(503);
      expect(reply.body).toMatchObject({ reason: 'pool-timeout' });
      expect(await countRows(db, tables.deliveries)).toBe(0);
    });
  });
});
