import { Body, Controller, Post } from '@nestjs/common';
import { NoTransaction } from 'nestjs-request-transaction';
import { NaiveTransfersService } from './naive-transfers.service';
import { TransferDto, type TransferReceipt } from '../../src/transfers/transfer.dto';

/** The naive variant's `POST /transfers`: its own transaction, locks in request order. */
@Controller('transfers')
@NoTransaction()
export class NaiveTransfersController {
  constructor(private readonly transfers: NaiveTransfersService) {}

  @Post()
  create(@Body() dto: TransferDto): Promise<TransferReceipt> {
    return this.transfers.transfer(dto);
  }
}
