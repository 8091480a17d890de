import { postgresEngine } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { observer, type Observer } from '../../test/support/observer';
import { AuditService } from '../src/people/audit.service';
import { NotificationsService } from '../src/people/notifications.service';
import { type AppUnderTest, tablesOf, countRows, emptyTables, expectAppLeakedNothing, startApp } from './harness';

describe('DELETE /people/:id (seed 002: follow-up work on a plain repository)', () => {
  const engine = postgresEngine;
  const tables = tablesOf('sa_people_');
  let db: Observer;
  let library: AppUnderTest;
  let naive: AppUnderTest;

  beforeAll(async () => {
    // A pool of ONE connection: a request that needs a second one cannot get it.
    library = await startApp(engine, tables, { variant: 'library', poolSize: 1, applicationName: 'wallet-people-library' });
    naive = await startApp(engine, tables, {
      variant: 'naive',
      poolSize: 1,
      acquireTimeoutMs: 500,
      applicationName: 'wallet-people-naive',
    });
    db = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([library?.close(), naive?.close(), db?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(async () => {
    jest.restoreAllMocks();
    await expectAppLeakedNothing(library, db);
    await expectAppLeakedNothing(naive, db);
  });

  async function addPerson(name: string): Promise<number> {
    const reply = await call<{ id: number }>('POST', `${library.url}/people`, { name });
    expect(reply.status).toBe(201);
    return reply.body.id;
  }

  async function personExists(id: number): Promise<boolean> {
    return (await db.query(`SELECT 1 FROM ${tables.people} WHERE id = $1`, [id])).length === 1;
  }

  /** Records each notification with whether, seen from outside, the person was gone at that moment. */
  function watchNotifications(app: AppUnderTest, personId: number): Array<{ message: string; goneWhenSent: boolean }> {
    const sent: Array<{ message: string; goneWhenSent: boolean }> = [];
    jest.spyOn(app.app.get(NotificationsService), 'send').mockImplementation(async (message) => {
      sent.push({ message, goneWhenSent: !(await personExists(personId)) });
    });
    return sent;
  }

  describe('with the library', () => {
    it('deletes the person and writes the audit entry in one transaction, then notifies once committed', async () => {
      const id = await addPerson('Dave');
      const sent = watchNotifications(library, id);

      const reply = await call('DELETE', `${library.url}/people/${id}`);

      expect(reply).toEqual({ status: 204, body: undefined });
      expect(await personExists(id)).toBe(false);
      expect(await db.query(`SELECT action, "subjectId" FROM ${tables.auditLog}`)).toEqual([
        { action: 'person.deleted', subjectId: id },
      ]);
      expect(sent).toEqual([{ message: `person ${id} deleted`, goneWhenSent: true }]);
    });

    it('keeps the person when the follow-up fails: nothing written, nobody notified', async () => {
      const id = await addPerson('Dave');
      const sent = watchNotifications(library, id);
      jest.spyOn(library.app.get(AuditService), 'record').mockRejectedValueOnce(new Error('audit log unavailable'));

      const reply = await call('DELETE', `${library.url}/people/${id}`);

      expect(reply.status).toBe(500);
      expect(await personExists(id)).toBe(true);
      expect(await countRows(db, tables.auditLog)).toBe(0);
      expect(sent).toEqual([]);
    });

    it('answers 404 for someone who does not exist, and notifies nobody', async () => {
      const sent = watchNotifications(library, 999);

      const reply = await call('DELETE', `${library.url}/people/999`);

      expect(reply.status).toBe(404);
      expect(reply.body.message).toBe('Person 999 does not exist.');
      expect(await countRows(db, tables.auditLog)).toBe(0);
      expect(sent).toEqual([]);
    });

    it('answers 400 to an id that is not a number', async () => {
      const reply = await call('DELETE', `${library.url}/people/dave`);

      expect(reply.status).toBe(400);
      expect(reply.body.message).toBe('Validation failed (numeric string is expected)');
    });
  });

  describe('written naively', () => {
    it('waits for a second connection it cannot get, fails with a 503, and keeps the person', async () => {
      const id = await addPerson('Dave');
      const sent = watchNotifications(naive, id);

      const reply = await call('DELETE', `${naive.url}/people/${id}`);

      expect(reply.status).toBe(503);
      expect(reply.body).toMatchObject({ reason: 'pool-timeout' });
      expect(await personExists(id)).toBe(true);
      expect(await countRows(db, tables.auditLog)).toBe(0);
      expect(sent).toEqual([]);
    });
  });
});
