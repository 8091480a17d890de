import { Args, Int, Mutation, Parent, Query, ResolveField, Resolver } from '@nestjs/graphql';
import { InjectTxRepository, Tx } from 'nestjs-request-transaction';
import { GraphQLError } from 'graphql';
import { type EntityManager, MoreThanOrEqual, type Repository } from 'typeorm';
import { Account } from '../accounts/account.entity';
import { LedgerEntry } from '../transfers/ledger-entry.entity';
import { AccountModel, LedgerEntryModel } from './wallet.models';

/**
 * The wallet over GraphQL. Each operation is one unit of work: the mutation's writes commit together
 * before the response, or roll back together on any error; the query's field resolver reads through
 * the same transaction and connection as the root field.
 */
@Resolver(() => AccountModel)
export class WalletResolver {
  constructor(@InjectTxRepository(LedgerEntry) private readonly entries: Repository<LedgerEntry>) {}

  /**
   * Moves `amount` cents: ledger entry, credit and debit in one transaction. An overdraft fails the
   * debit, the last write: the operation's error rolls the first two back, and nothing is written.
   */
  @Mutation(() => LedgerEntryModel)
  async transfer(
    @Args('from', { type: () => Int }) from: number,
    @Args('to', { type: () => Int }) to: number,
    @Args('amount', { type: () => Int }) amount: number,
    @Tx() tx: EntityManager,
  ): Promise<LedgerEntryModel> {
    const entry = await tx.save(LedgerEntry, { fromAccountId: from, toAccountId: to, amount });
    await tx.increment(Account, { id: to }, 'balance', amount);
    const debit = await tx.decrement(Account, { id: from, balance: MoreThanOrEqual(amount) }, 'balance', amount);
    if (debit.affected !== 1)
      throw new GraphQLError(`Account ${from} cannot cover ${amount} cents.`, { extensions: { code: 'INSUFFICIENT_FUNDS' } });
    return entry;
  }

  @Query(() => AccountModel, { nullable: true })
  account(@Args('id', { type: () => Int }) id: number, @Tx() tx: EntityManager): Promise<AccountModel | null> {
    return tx.findOneBy(Account, { id });
  }

  /** The account's outgoing ledger entries: the same transaction and connection as `account`. */
  @ResolveField(() => [LedgerEntryModel])
  sent(@Parent() account: AccountModel): Promise<LedgerEntryModel[]> {
    return this.entries.find({ where: { fromAccountId: account.id }, order: { id: 'ASC' } });
  }
}
