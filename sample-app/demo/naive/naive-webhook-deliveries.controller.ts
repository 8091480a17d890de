import { Body, Controller, Param, ParseIntPipe, Post } from '@nestjs/common';
import { NoTransaction } from 'nestjs-request-transaction';
import { type DeliveryReceipt, DeliveryDto } from '../../src/webhooks/webhook.dto';
import { NaiveWebhooksService } from './naive-webhooks.service';

/** The naive variant's deliveries: outside TransactionalModule (no request transaction, no guard). */
@Controller('webhooks/:id/deliveries')
@NoTransaction()
export class NaiveWebhookDeliveriesController {
  constructor(private readonly webhooks: NaiveWebhooksService) {}

  @Post()
  deliver(@Param('id', ParseIntPipe) id: number, @Body() dto: DeliveryDto): Promise<DeliveryReceipt> {
    return this.webhooks.deliver(id, dto.event);
  }
}
