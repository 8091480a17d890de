import { Body, Controller, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Tx } from 'nestjs-request-transaction';
import type { EntityManager } from 'typeorm';
import { type DeliveryReceipt, DeliveryDto } from './webhook.dto';
import { WebhooksService } from './webhooks.service';

@Controller('webhooks/:id/deliveries')
export class WebhookDeliveriesController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Post()
  deliver(@Param('id', ParseIntPipe) id: number, @Body() dto: DeliveryDto, @Tx() tx: EntityManager): Promise<DeliveryReceipt> {
    return this.webhooks.deliver(tx, id, dto.event);
  }
}
