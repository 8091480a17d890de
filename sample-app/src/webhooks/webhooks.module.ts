import { Module } from '@nestjs/common';
import { WebhookCipher } from './webhook-cipher';
import { WebhookDeliveriesController } from './webhook-deliveries.controller';
import { WebhooksController } from './webhooks.controller';
import { WebhooksService } from './webhooks.service';

@Module({
  controllers: [WebhooksController, WebhookDeliveriesController],
  providers: [WebhookCipher, WebhooksService],
})
export class WebhooksModule {}
