import { Body, Controller, Get, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Transactional } from 'nestjs-request-transaction';
import { BodyPipe, integer, optional, text } from '../common/validation';
import type { Account } from './account.entity';
import { AccountsService } from './accounts.service';

const openAccount = new BodyPipe({
  owner: text({ maxLength: 100 }),
  /** Opening balance in cents. */
  balance: optional(integer({ min: 0, max: 100_000_000 })),
});

@Controller('accounts')
export class AccountsController {
  constructor(private readonly accounts: AccountsService) {}

  @Post()
  open(@Body(openAccount) dto: { owner: string; balance?: number }): Promise<Account> {
    return this.accounts.open(dto.owner, dto.balance ?? 0);
  }

  @Get()
  @Transactional({ readOnly: true })
  list(): Promise<Account[]> {
    return this.accounts.list();
  }

  @Get(':id')
  @Transactional({ readOnly: true })
  get(@Param('id', ParseIntPipe) id: number): Promise<Account> {
    return this.accounts.get(id);
  }
}
