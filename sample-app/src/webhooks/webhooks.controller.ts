import { Body, Controller, Get, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Transactional, Tx } from 'nestjs-request-transaction';
import type { EntityManager } from 'typeorm';
import { CreateWebhookDto } from './webhook.dto';
import { WebhooksService } from './webhooks.service';

@Controller('webhooks')
export class WebhooksController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Post()
  register(@Body() dto: CreateWebhookDto, @Tx() tx: EntityManager): Promise<{ id: number; url: string }> {
    return this.webhooks.register(tx, dto.url);
  }

  @Get(':id')
  @Transactional({ readOnly: true })
  async get(@Param('id', ParseIntPipe) id: number, @Tx() tx: EntityManager): Promise<{ id: number; url: string }> {
    return { id, url: await this.webhooks.decryptUrl(tx, id) };
  }
}
