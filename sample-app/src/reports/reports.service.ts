import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectTxRepository } from 'nestjs-request-transaction';
import type { Repository } from 'typeorm';
import { Account } from '../accounts/account.entity';

/** What `GET /reports/balances` returns. */
export interface BalanceReport {
  accounts: Array<{ id: number; owner: string; balance: number }>;
  /** Sum of the balances above, in cents. */
  total: number;
}

/**
 * Balances of several accounts, read one SELECT at a time (as a real report reads several tables).
 * Whether the total adds up depends on the route's isolation level, not on this code: see
 * ReportsController (a snapshot) and NaiveReportsController (none).
 */
@Injectable()
export class ReportsService {
  /**
   * Awaited between two reads, with the number of accounts read so far. A seam for the read-skew
   * tests, which hold the report here while a transfer commits. Does nothing by default.
   */
  betweenReads: (readSoFar: number) => Promise<void> = async () => undefined;

  constructor(@InjectTxRepository(Account) private readonly accounts: Repository<Account>) {}

  async balances(ids?: number[]): Promise<BalanceReport> {
    const wanted = ids ?? (await this.accounts.find({ select: { id: true }, order: { id: 'ASC' } })).map((a) => a.id);
    const accounts: BalanceReport['accounts'] = [];
    for (const id of wanted) {
      if (accounts.length > 0) await this.betweenReads(accounts.length);
      const account = await this.accounts.findOneBy({ id });
      if (account === null) throw new NotFoundException(`Account ${id} does not exist.`);
      accounts.push({ id: account.id, owner: account.owner, balance: account.balance });
    }
    return { accounts, total: accounts.reduce((sum, a) => sum + a.balance, 0) };
  }
}
