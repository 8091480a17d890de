import { ConflictException, Injectable } from '@nestjs/common';
import { InjectTxRepository } from 'nestjs-request-transaction';
import { Repository } from 'typeorm';
import { Account } from './account.entity';

@Injectable()
export class AccountsService {
  // Each call of this repository runs in the current request's transaction, on its one connection.
  constructor(@InjectTxRepository(Account) private readonly accounts: Repository<Account>) {}

  async transfer(from: number, to: number, amount: number): Promise<void> {
    await this.accounts.decrement({ id: from }, 'balance', amount);
    await this.accounts.increment({ id: to }, 'balance', amount);
    const source = await this.accounts.findOneByOrFail({ id: from });
    if (source.balance < 0) throw new ConflictException('Insufficient funds'); // ROLLBACK undoes both updates
  }
}
