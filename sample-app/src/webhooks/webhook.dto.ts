import { BodyPipe, text } from '../common/validation';

/** `POST /webhooks` body. */
export const createWebhookPipe = new BodyPipe({
  url: text({ maxLength: 1000, pattern: /^https?:\/\/[^\s/$.?#][^\s]*$/i, hint: 'an http:// or https:// URL' }),
});

/** `POST /webhooks/:id/deliveries` body. */
export const deliveryPipe = new BodyPipe({
  event: text({ maxLength: 100, pattern: /^[a-z][a-z0-9_.-]*$/, hint: 'an event name like transfer.created' }),
});

/** What a delivery returns: the event, queued, and where it goes. */
export interface DeliveryReceipt {
  deliveryId: number;
  webhookId: number;
  event: string;
  url: string;
}
