import { type DynamicModule, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { Variant } from '../common/variant';
import { NaiveWebhookDeliveriesController } from './naive-webhook-deliveries.controller';
import { NaiveWebhooksService } from './naive-webhooks.service';
import { WebhookCipher } from './webhook-cipher';
import { WebhookDeliveriesController } from './webhook-deliveries.controller';
import { Webhook } from './webhook.entity';
import { WebhooksController } from './webhooks.controller';
import { WebhooksService } from './webhooks.service';

@Module({
  imports: [TypeOrmModule.forFeature([Webhook])],
  controllers: [WebhooksController],
  providers: [WebhookCipher, WebhooksService, NaiveWebhooksService],
})
export class WebhooksModule {
  /** Adds `POST /webhooks/:id/deliveries`, served by the variant's controller. */
  static forVariant(variant: Variant): DynamicModule {
    return {
      module: WebhooksModule,
      controllers: [variant === 'naive' ? NaiveWebhookDeliveriesController : WebhookDeliveriesController],
    };
  }
}
