import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { Account } from '../../src/accounts/account.entity';
import { inManualTransaction } from './manual-transaction';
import { moveMoney } from '../../src/transfers/transfers.service';
import type { TransferDto, TransferReceipt } from '../../src/transfers/transfer.dto';

/**
 * The transfer as seed 003 first wrote it: lock the sender, then the receiver. Two opposite transfers
 * between the same accounts each hold one lock and wait for the other's: a deadlock.
 */
@Injectable()
export class NaiveTransfersService {
  constructor(private readonly dataSource: DataSource) {}

  transfer(dto: TransferDto): Promise<TransferReceipt> {
    return inManualTransaction(this.dataSource, async ({ manager }) => {
      const lock = { mode: 'pessimistic_write' } as const;
      const from = await manager.findOne(Account, { where: { id: dto.from }, lock });
      const to = await manager.findOne(Account, { where: { id: dto.to }, lock });
      return moveMoney(manager, from, to, dto);
    });
  }
}
