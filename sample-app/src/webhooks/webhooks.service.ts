import { Injectable, NotFoundException } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { WebhookCipher } from './webhook-cipher';
import { WebhookDelivery } from './webhook-delivery.entity';
import { Webhook } from './webhook.entity';
import type { DeliveryReceipt } from './webhook.dto';

/** Webhooks, with the caller's transaction passed down explicitly (seed 000's fix). */
@Injectable()
export class WebhooksService {
  constructor(private readonly cipher: WebhookCipher) {}

  async register(tx: EntityManager, url: string): Promise<{ id: number; url: string }> {
    const webhook = await tx.save(tx.create(Webhook, { encryptedUrl: this.cipher.encrypt(url) }));
    return { id: webhook.id, url };
  }

  /** Queues `event` for the webhook and returns where it goes: both in the caller's transaction. */
  async deliver(tx: EntityManager, webhookId: number, event: string): Promise<DeliveryReceipt> {
    const delivery = await tx.save(tx.create(WebhookDelivery, { webhookId, event }));
    const url = await this.decryptUrl(tx, webhookId);
    return { deliveryId: delivery.id, webhookId, event, url };
  }

  /**
   * Reads the webhook's encrypted URL through `tx` (the request's connection, not a second one from
   * the pool) and decrypts it. 404 when there is no such webhook.
   */
  async decryptUrl(tx: EntityManager, webhookId: number): Promise<string> {
    const webhook = await tx.findOneBy(Webhook, { id: webhookId });
    if (webhook === null) throw new NotFoundException(`Webhook ${webhookId} does not exist.`);
    return this.cipher.decrypt(webhook.encryptedUrl);
  }
}
