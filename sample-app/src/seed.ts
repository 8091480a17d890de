import type { INestApplicationContext } from '@nestjs/common';
import { TransactionRunner } from 'nestjs-request-transaction';
import { Account } from './accounts/account.entity';
import { Person } from './people/person.entity';
import { Webhook } from './webhooks/webhook.entity';
import { WebhooksService } from './webhooks/webhooks.service';

/** Ids of demo data, for the examples printed at startup. */
export interface DemoData {
  accountIds: number[];
  personIds: number[];
  webhookId: number;
}

/**
 * Adds demo data where there is none: three accounts, a few people, a webhook (each kind only if its
 * table is empty). One unit of work outside HTTP, through TransactionRunner, as a script or a cron job would.
 */
export async function seedDemoData(app: INestApplicationContext): Promise<DemoData> {
  const webhooks = app.get(WebhooksService);
  return app.get(TransactionRunner).run(
    async (tx) => {
      if ((await tx.count(Account)) === 0) {
        await tx.save(Account, [
          { owner: 'alice', balance: 100_000 },
          { owner: 'bob', balance: 50_000 },
          { owner: 'carol', balance: 25_000 },
        ]);
      }
      if ((await tx.count(Person)) === 0) {
        await tx.save(Person, [{ name: 'Alice' }, { name: 'Bob' }, { name: 'Carol' }, { name: 'Dave' }]);
      }
      if ((await tx.count(Webhook)) === 0) await webhooks.register(tx, 'https://hooks.example.com/wallet?token=s3cr3t');
      const accounts = await tx.find(Account, { order: { id: 'ASC' }, take: 3 });
      const people = await tx.find(Person, { order: { id: 'ASC' }, take: 4 });
      const [webhook] = await tx.find(Webhook, { order: { id: 'ASC' }, take: 1 });
      return { accountIds: accounts.map((a) => a.id), personIds: people.map((p) => p.id), webhookId: webhook.id };
    },
    { name: 'seedDemoData' },
  );
}
