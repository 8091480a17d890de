import { Body, Controller, Post } from '@nestjs/common';
import { Tx } from 'nestjs-request-transaction';
import type { EntityManager } from 'typeorm';
import { type TransferDto, type TransferReceipt, transferPipe } from './transfer.dto';
import { TransfersService } from './transfers.service';

@Controller('transfers')
export class TransfersController {
  constructor(private readonly transfers: TransfersService) {}

  @Post()
  create(@Body(transferPipe) dto: TransferDto, @Tx() tx: EntityManager): Promise<TransferReceipt> {
    return this.transfers.transfer(tx, dto);
  }
}
