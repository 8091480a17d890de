import type { EntityManager, Repository } from 'typeorm';
import { Account, Transfer } from './entities';

/**
 * The units of work, the same in every TypeORM variant: each variant only decides where the
 * repositories come from (a QueryRunner's manager, `@Tx()`, `TransactionHost.tx`, or the plain injected
 * repositories that typeorm-transactional redirects to its transaction).
 */
export interface Repos {
  accounts: Repository<Account>;
  transfers: Repository<Transfer>;
}

export interface TransferDto {
  from: number;
  to: number;
  amount: number;
}

export function reposOf(manager: EntityManager): Repos {
  return { accounts: manager.getRepository(Account), transfers: manager.getRepository(Transfer) };
}

/** UPDATE, UPDATE, INSERT … RETURNING. */
export async function transfer(repos: Repos, dto: TransferDto): Promise<{ id: number }> {
  const from = Number(dto.from);
  const to = Number(dto.to);
  const amount = Number(dto.amount);
  await repos.accounts.decrement({ id: from }, 'balance', amount);
  await repos.accounts.increment({ id: to }, 'balance', amount);
  const result = await repos.transfers.insert({ fromId: from, toId: to, amount });
  return { id: result.identifiers[0].id as number };
}

/** Two SELECTs by primary key: both sides of a transfer, read in one transaction. */
export async function balances(repos: Repos, from: unknown, to: unknown): Promise<{ from: Account | null; to: Account | null }> {
  const a = await repos.accounts.findOneBy({ id: Number(from) });
  const b = await repos.accounts.findOneBy({ id: Number(to) });
  return { from: a, to: b };
}
