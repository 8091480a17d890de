import { Body, Controller, Get, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Transactional } from 'nestjs-request-transaction';
import type { Account } from './account.entity';
import { AccountsService } from './accounts.service';
import { OpenAccountDto } from './open-account.dto';

@Controller('accounts')
export class AccountsController {
  constructor(private readonly accounts: AccountsService) {}

  @Post()
  open(@Body() dto: OpenAccountDto): Promise<Account> {
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
