import { Body, Controller, Post } from '@nestjs/common';
import { Tx } from 'nestjs-request-transaction';
import type { EntityManager } from 'typeorm';
import { TransferDto, type TransferReceipt } from './transfer.dto';
import { TransfersService } from './transfers.service';

@Controller('transfers')
export class TransfersController {
  constructor(private readonly transfers: TransfersService) {}

  @Post()
  create(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<TransferReceipt> {
    return this.transfers.transfer(tx, dto);
  }
}
