import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectTxRepository } from 'nestjs-request-transaction';
import type { Repository } from 'typeorm';
import { Account } from './account.entity';

/** Accounts, through a repository bound to the request transaction. */
@Injectable()
export class AccountsService {
  constructor(@InjectTxRepository(Account) private readonly accounts: Repository<Account>) {}

  open(owner: string, balance: number): Promise<Account> {
    return this.accounts.save(this.accounts.create({ owner, balance }));
  }

  list(): Promise<Account[]> {
    return this.accounts.find({ order: { id: 'ASC' } });
  }

  async get(id: number): Promise<Account> {
    const account = await this.accounts.findOneBy({ id });
    if (account === null) throw new NotFoundException(`Account ${id} does not exist.`);
    return account;
  }
}
