import { Injectable, NotFoundException, UnprocessableEntityException } from '@nestjs/common';
import { lockInOrder } from 'nestjs-request-transaction';
import type { EntityManager } from 'typeorm';
import { Account } from '../accounts/account.entity';
import { LedgerEntry } from './ledger-entry.entity';
import type { TransferDto, TransferReceipt } from './transfer.dto';

/** Double-entry transfers: debit, credit and ledger entry in the caller's transaction. */
@Injectable()
export class TransfersService {
  /**
   * Locks both accounts in id order (never from→to: A→B and B→A would wait on each other in a cycle
   * and the database would kill one of them), then moves the money.
   */
  async transfer(tx: EntityManager, dto: TransferDto): Promise<TransferReceipt> {
    const locked = await lockInOrder(tx, Account, [dto.from, dto.to]);
    return moveMoney(tx, locked.get(dto.from), locked.get(dto.to), dto);
  }
}

/**
 * Moves `dto.amount` from one locked account to the other and records it in the ledger: the part of a
 * transfer that does not depend on how the accounts were locked.
 */
export async function moveMoney(
  tx: EntityManager,
  from: Account | null | undefined,
  to: Account | null | undefined,
  dto: TransferDto,
): Promise<TransferReceipt> {
  if (!from) throw new NotFoundException(`Account ${dto.from} does not exist.`);
  if (!to) throw new NotFoundException(`Account ${dto.to} does not exist.`);
  if (from.balance < dto.amount) {
    throw new UnprocessableEntityException(
      `Account ${from.id} holds ${from.balance} cents and cannot send ${dto.amount}; nothing was transferred.`,
    );
  }
  await tx.update(Account, { id: from.id }, { balance: from.balance - dto.amount });
  await tx.update(Account, { id: to.id }, { balance: to.balance + dto.amount });
  const entry = await tx.save(tx.create(LedgerEntry, { fromAccountId: from.id, toAccountId: to.id, amount: dto.amount }));
  return {
    ledgerEntryId: entry.id,
    from: { id: from.id, balance: from.balance - dto.amount },
    to: { id: to.id, balance: to.balance + dto.amount },
    amount: dto.amount,
  };
}
