import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { DataSource, type Repository } from 'typeorm';
import { inManualTransaction } from './manual-transaction';
import { WebhookCipher } from '../../src/webhooks/webhook-cipher';
import { WebhookDelivery } from '../../src/webhooks/webhook-delivery.entity';
import { Webhook } from '../../src/webhooks/webhook.entity';
import type { DeliveryReceipt } from '../../src/webhooks/webhook.dto';

/**
 * Deliveries as seed 000 wrote them: a transaction of its own per request, and inside it a URL lookup
 * through a plain repository, which takes a second pooled connection while the first is held. With
 * every pooled connection held by a request waiting for a second one, the pool deadlocks until the
 * acquisition timeout fails them.
 */
@Injectable()
export class NaiveWebhooksService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly cipher: WebhookCipher,
    @InjectRepository(Webhook) private readonly webhooks: Repository<Webhook>,
  ) {}

  deliver(webhookId: number, event: string): Promise<DeliveryReceipt> {
    return inManualTransaction(this.dataSource, async ({ manager }) => {
      const delivery = await manager.save(manager.create(WebhookDelivery, { webhookId, event }));
      const url = await this.decryptUrl(webhookId); // ← a second connection, inside the transaction
      return { deliveryId: delivery.id, webhookId, event, url };
    });
  }

  private async decryptUrl(webhookId: number): Promise<string> {
    const webhook = await this.webhooks.findOneBy({ id: webhookId });
    if (webhook === null) throw new NotFoundException(`Webhook ${webhookId} does not exist.`);
    return this.cipher.decrypt(webhook.encryptedUrl);
  }
}
