import { Field, Int, ObjectType } from '@nestjs/graphql';

/** An account, as the GraphQL API shows it. */
@ObjectType('Account')
export class AccountModel {
  @Field(() => Int)
  id!: number;

  @Field()
  owner!: string;

  /** Cents. */
  @Field(() => Int)
  balance!: number;
}

/** A ledger entry, as the GraphQL API shows it. */
@ObjectType('LedgerEntry')
export class LedgerEntryModel {
  @Field(() => Int)
  id!: number;

  @Field(() => Int)
  fromAccountId!: number;

  @Field(() => Int)
  toAccountId!: number;

  @Field(() => Int)
  amount!: number;
}
