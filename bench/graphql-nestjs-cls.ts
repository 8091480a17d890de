/**
 * `gql-nestjs-cls`: the GraphQL schema of graphql.ts with @nestjs-cls/transactional, set up as for the
 * HTTP variant (peer-nestjs-cls.ts): the CLS middleware, `@Transactional()` on the service methods,
 * every statement through `TransactionHost.tx`. Each resolver calls its own `@Transactional()` method,
 * so the field resolver's read runs in a transaction of its own: a `pair` query is two transactions,
 * one SELECT each (its docs have no per-operation transaction).
 */
import { type DynamicModule, Injectable, Module } from '@nestjs/common';
import { Args, Int, Mutation, Parent, Query, ResolveField, Resolver } from '@nestjs/graphql';
import { getDataSourceToken, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { ClsPluginTransactional, Transactional, TransactionHost } from '@nestjs-cls/transactional';
import { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';
import { ClsModule } from 'nestjs-cls';
import { Account } from './entities';
import { AccountModel, graphQLModule, PairModel, TransferResultModel } from './graphql';
import { reposOf, transfer, type TransferDto } from './units';
import type { AdapterName } from './variants';

@Injectable()
class AccountsService {
  constructor(private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>) {}

  @Transactional()
  transfer(dto: TransferDto): Promise<{ id: number }> {
    return transfer(reposOf(this.txHost.tx), dto);
  }

  @Transactional()
  account(id: number): Promise<Account | null> {
    return this.txHost.tx.findOneBy(Account, { id });
  }
}

@Resolver(() => PairModel)
class NestjsClsResolver {
  constructor(private readonly accounts: AccountsService) {}

  @Mutation(() => TransferResultModel)
  transfer(
    @Args('from', { type: () => Int }) from: number,
    @Args('to', { type: () => Int }) to: number,
    @Args('amount', { type: () => Int }) amount: number,
  ): Promise<{ id: number }> {
    return this.accounts.transfer({ from, to, amount });
  }

  @Query(() => PairModel)
  async pair(@Args('from', { type: () => Int }) from: number, @Args('to', { type: () => Int }) to: number): Promise<PairModel> {
    return { from: await this.accounts.account(from), toId: to };
  }

  @ResolveField(() => AccountModel, { nullable: true })
  to(@Parent() pair: PairModel): Promise<Account | null> {
    return this.accounts.account(pair.toId);
  }
}

@Module({})
class NestjsClsGraphQLBenchModule {}

export function nestjsClsGraphQLModule(adapter: AdapterName, typeOrmOptions: TypeOrmModuleOptions): DynamicModule {
  return {
    module: NestjsClsGraphQLBenchModule,
    imports: [
      TypeOrmModule.forRoot(typeOrmOptions),
      ClsModule.forRoot({
        global: true,
        middleware: { mount: true },
        plugins: [
          new ClsPluginTransactional({
            imports: [TypeOrmModule],
            adapter: new TransactionalAdapterTypeOrm({ dataSourceToken: getDataSourceToken() }),
          }),
        ],
      }),
      graphQLModule(adapter, {}),
    ],
    providers: [AccountsService, NestjsClsResolver],
  };
}
