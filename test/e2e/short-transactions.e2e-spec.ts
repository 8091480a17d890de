import { TypeOrmModule } from '@nestjs/typeorm';
import { setTimeout as delay } from 'node:timers/promises';
import { DataSource, IsNull, Not } from 'typeorm';
import { TransactionalModule, TransactionHost } from '../../lib';
import { ConnectionAudit } from '../../lib/testing';
import { Mailer, OutboxMail, OutboxRelay, RegistrationController, User } from '../examples/short-transactions';
import { engines, typeormOptions } from '../support/databases';
import { postJson } from '../support/http';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

/** The app's idleInTransactionMs; each mail takes three times as long. */
const THRESHOLD_MS = 100;
const MAIL_MS = 300;

/** A mail server that answers after MAIL_MS, or refuses; it notes how many connections were held while it worked. */
class TestMailer extends Mailer {
  failing = false;
  readonly sent: string[] = [];
  readonly heldDuringSend: number[] = [];
  host?: TransactionHost;

  async send(to: string, subject: string): Promise<void> {
    this.heldDuringSend.push(this.host!.stats().connectionsHeld);
    await delay(MAIL_MS);
    if (this.failing) throw new Error('421 mail server unavailable');
    this.sent.push(`${subject} -> ${to}`);
  }
}

describe.each(engines)('keeping a mail out of the transaction on $name', (engine) => {
  const applicationName = `short-tx-${engine.name}`;
  const db = suiteObserver(engine);
  const nestLog = new RecordingNestLogger();
  const mailer = new TestMailer();
  let dataSource: DataSource;
  let audit: ConnectionAudit;
  let sequence = 0;
  const email = () => `user-${engine.name}-${(sequence += 1)}@example.com`;
  const userExists = async (address: string) => (await dataSource.getRepository(User).countBy({ email: address })) === 1;

  // Declared before the app's: the audit's checks run before its leak check, and it is detached before the app closes.
  afterEach(() => {
    // Whatever the mail server did, no connection sat idle in transaction waiting for it.
    audit.assertNoIdleInTransaction();
    audit.assertOneConnectionPerUnit();
  });

  afterAll(() => {
    audit?.detach();
  });

  // The tables are emptied after start-up (earlier runs' rows: the addresses below start over each run) and after each test.
  const testApp = suiteApp(db, {
    applicationName,
    tables: [OutboxMail, User],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [User, OutboxMail] })),
        TransactionalModule.forRoot({ idleInTransactionMs: THRESHOLD_MS }),
      ],
      controllers: [RegistrationController],
      providers: [{ provide: Mailer, useValue: mailer }, OutboxRelay],
      logger: nestLog,
    }),
  });

  beforeAll(() => {
    dataSource = testApp.dataSource;
    mailer.host = testApp.get(TransactionHost);
    audit = ConnectionAudit.attach(dataSource);
  });

  beforeEach(() => {
    mailer.failing = false;
    mailer.sent.length = 0;
    mailer.heldDuringSend.length = 0;
    nestLog.clear();
    audit.reset();
  });

  describe('1. before the first query', () => {
    it('sends the mail while no connection is held, then writes', async () => {
      const address = email();
      expect((await postJson(`${testApp.url}/users/invited`, { email: address })).status).toBe(201);
      expect(mailer.sent).toEqual([`Your invitation was accepted -> ${address}`]);
      expect(mailer.heldDuringSend).toEqual([0]);
      expect(await userExists(address)).toBe(true);
    });

    it('fails the request when the mail fails, and writes nothing', async () => {
      mailer.failing = true;
      const address = email();
      expect((await postJson(`${testApp.url}/users/invited`, { email: address })).status).toBe(500);
      expect(await userExists(address)).toBe(false);
    });
  });

  describe('2. after the commit, in an afterCommit hook', () => {
    it('sends the mail once the user is committed and the connection is back in the pool', async () => {
      const address = email();
      expect((await postJson(`${testApp.url}/users`, { email: address })).status).toBe(201);
      expect(mailer.sent).toEqual([`Welcome -> ${address}`]);
      expect(mailer.heldDuringSend).toEqual([0]);
      expect(await userExists(address)).toBe(true);
    });

    it('keeps the user and answers 201 when the mail fails: the failure is only logged', async () => {
      mailer.failing = true;
      const address = email();
      expect((await postJson(`${testApp.url}/users`, { email: address })).status).toBe(201);
      expect(await userExists(address)).toBe(true);
      expect(nestLog.of('RegistrationController').map((e) => e.message)).toEqual([
        expect.stringMatching(/^The welcome mail to user \d+ was not sent: Error: 421 mail server unavailable$/),
      ]);
    });

    it('sends nothing when the transaction rolls back', async () => {
      const address = email();
      expect((await postJson(`${testApp.url}/users`, { email: address })).status).toBe(201);
      mailer.sent.length = 0;
      // The same address again: the unique constraint fails the INSERT, the unit of work rolls back.
      expect((await postJson(`${testApp.url}/users`, { email: address })).status).toBe(500);
      expect(mailer.sent).toEqual([]);
    });
  });

  describe('3. an outbox row written in the transaction', () => {
    const unsent = () => dataSource.getRepository(OutboxMail).countBy({ sentAt: IsNull() });

    it('commits the row with the user; the relay sends it later without holding a connection', async () => {
      const address = email();
      expect((await postJson(`${testApp.url}/users/with-outbox`, { email: address })).status).toBe(201);
      expect(mailer.sent).toEqual([]);
      expect(await unsent()).toBe(1);

      expect(await testApp.app.get(OutboxRelay).relay()).toBe(1);
      expect(mailer.sent).toEqual([`Welcome -> ${address}`]);
      expect(mailer.heldDuringSend).toEqual([0]);
      expect(await unsent()).toBe(0);
      expect(await dataSource.getRepository(OutboxMail).countBy({ recipient: address, sentAt: Not(IsNull()) })).toBe(1);
    });

    it('keeps a mail that failed in the outbox for the next relay, and the request never sees the failure', async () => {
      mailer.failing = true;
      const address = email();
      expect((await postJson(`${testApp.url}/users/with-outbox`, { email: address })).status).toBe(201);
      expect(await testApp.app.get(OutboxRelay).relay()).toBe(0);
      expect(await unsent()).toBe(1);

      mailer.failing = false;
      expect(await testApp.app.get(OutboxRelay).relay()).toBe(1);
      expect(mailer.sent).toEqual([`Welcome -> ${address}`]);
      expect(await unsent()).toBe(0);
    });
  });
});
