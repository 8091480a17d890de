import { Body, Controller, Post } from '@nestjs/common';
import { Transactional, Tx } from 'nestjs-request-transaction';
import { EntityManager } from 'typeorm';
import { Account } from './account.entity';
import { AccountsService } from './accounts.service';

@Controller('accounts')
export class AccountsController {
  constructor(private readonly accounts: AccountsService) {}

  @Post()
  open(@Body() body: { balance: number }, @Tx() tx: EntityManager): Promise<Account> {
    return tx.save(Account, { balance: body.balance }); // the request's transaction, explicitly
  }

  @Post('transfers')
  @Transactional({ retry: true }) // after a deadlock, the request runs again in a fresh transaction
  transfer(@Body() body: { from: number; to: number; amount: number }): Promise<void> {
    return this.accounts.transfer(body.from, body.to, body.amount);
  }
}
