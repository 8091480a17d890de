/**
 * The GraphQL variants: the same schema (code-first) on Apollo (Express) and Mercurius (Fastify), its
 * resolvers written by hand with a QueryRunner per operation (`gql-handwritten`) and with this module
 * (`gql-module`); `@nestjs-cls/transactional` is in graphql-nestjs-cls.ts. Loaded only by the GraphQL
 * variants' processes.
 *
 * - `mutation transfer(from, to, amount) { id }`: the write route's unit (units.ts `transfer()`: UPDATE,
 *   UPDATE, INSERT), so the runner's audit counts its rows and checks the balances as on `POST /transfer`;
 * - `query pair(from, to) { from { id balance } to { id balance } }`: the root resolver reads `from`,
 *   a `@ResolveField()` reads `to`: two SELECTs, one per resolver.
 */
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { type DynamicModule, Module, type Type } from '@nestjs/common';
import {
  Args,
  Context,
  Field,
  GraphQLModule,
  Int,
  Mutation,
  ObjectType,
  Parent,
  Query,
  ResolveField,
  Resolver,
} from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, type EntityManager, type QueryRunner, type Repository } from 'typeorm';
import { Account, Transfer } from './entities';
import { loadLibrary } from './library';
import { reposOf, transfer } from './units';
import type { AdapterName } from './variants';

@ObjectType('Account')
export class AccountModel {
  @Field(() => Int)
  id!: number;

  @Field()
  balance!: string;
}

/** `from` is read by the root resolver, `to` by a field resolver. */
@ObjectType('Pair')
export class PairModel {
  @Field(() => AccountModel, { nullable: true })
  from!: Account | null;

  toId!: number;
}

@ObjectType('TransferResult')
export class TransferResultModel {
  @Field(() => Int)
  id!: number;
}

/** What a server hook must do once an operation has been resolved, before its response is sent. */
export interface OperationHooks {
  apollo?: unknown[];
  mercurius?: Record<string, unknown>;
}

/** `GraphQLModule.forRoot()` as docs/graphql.md shows it: Apollo on Express, Mercurius on Fastify. */
export function graphQLModule(adapter: AdapterName, hooks: OperationHooks): DynamicModule {
  if (adapter === 'express') {
    return GraphQLModule.forRoot<ApolloDriverConfig>({
      driver: ApolloDriver,
      autoSchemaFile: true,
      fieldResolverEnhancers: ['interceptors'],
      ...(hooks.apollo ? { plugins: hooks.apollo as ApolloDriverConfig['plugins'] } : {}),
    });
  }
  return GraphQLModule.forRoot<MercuriusDriverConfig>({
    driver: MercuriusDriver,
    autoSchemaFile: true,
    fieldResolverEnhancers: ['interceptors'],
    ...(hooks.mercurius ? { hooks: hooks.mercurius } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// by hand: a lazy QueryRunner per operation, settled by the server's hook

/** One operation's transaction: opened at the first statement, settled once after execution. */
class OperationTransaction {
  private runner?: Promise<QueryRunner>;

  constructor(private readonly dataSource: DataSource) {}

  async manager(): Promise<EntityManager> {
    this.runner ??= (async () => {
      const qr = this.dataSource.createQueryRunner();
      await qr.connect();
      await qr.startTransaction();
      return qr;
    })();
    return (await this.runner).manager;
  }

  async settle(succeeded: boolean): Promise<void> {
    if (this.runner === undefined) return;
    const qr = await this.runner;
    try {
      if (succeeded) await qr.commitTransaction();
      else await qr.rollbackTransaction();
    } finally {
      await qr.release();
    }
  }
}

/** Keyed on the GraphQL context object, which the server creates once per operation. */
const operations = new WeakMap<object, OperationTransaction>();

function operationOf(context: object, dataSource: DataSource): OperationTransaction {
  let operation = operations.get(context);
  if (operation === undefined) {
    operation = new OperationTransaction(dataSource);
    operations.set(context, operation);
  }
  return operation;
}

async function settle(context: object, succeeded: boolean): Promise<void> {
  const operation = operations.get(context);
  operations.delete(context);
  await operation?.settle(succeeded);
}

/** Apollo: `willSendResponse`, after execution, before the response. Mercurius: `onResolution`. */
const handwrittenHooks: OperationHooks = {
  apollo: [
    {
      requestDidStart: async () => ({
        willSendResponse: async ({ contextValue, errors }: { contextValue: object; errors?: readonly unknown[] }) =>
          settle(contextValue, (errors?.length ?? 0) === 0),
      }),
    },
  ],
  mercurius: {
    onResolution: async (execution: { errors?: readonly unknown[] }, context: object) =>
      settle(context, (execution.errors?.length ?? 0) === 0),
  },
};

@Resolver(() => PairModel)
class HandwrittenResolver {
  constructor(private readonly dataSource: DataSource) {}

  @Mutation(() => TransferResultModel)
  async transfer(
    @Args('from', { type: () => Int }) from: number,
    @Args('to', { type: () => Int }) to: number,
    @Args('amount', { type: () => Int }) amount: number,
    @Context() context: object,
  ): Promise<{ id: number }> {
    const manager = await operationOf(context, this.dataSource).manager();
    return transfer(reposOf(manager), { from, to, amount });
  }

  @Query(() => PairModel)
  async pair(
    @Args('from', { type: () => Int }) from: number,
    @Args('to', { type: () => Int }) to: number,
    @Context() context: object,
  ): Promise<PairModel> {
    const manager = await operationOf(context, this.dataSource).manager();
    return { from: await manager.findOneBy(Account, { id: from }), toId: to };
  }

  @ResolveField(() => AccountModel, { nullable: true })
  async to(@Parent() pair: PairModel, @Context() context: object): Promise<Account | null> {
    const manager = await operationOf(context, this.dataSource).manager();
    return manager.findOneBy(Account, { id: pair.toId });
  }
}

// ---------------------------------------------------------------------------------------------
// with the module: `@Tx()` in the root resolvers, a transaction-bound repository in the field resolver

function moduleResolver(): Type {
  const { Tx, InjectTxRepository } = loadLibrary();

  @Resolver(() => PairModel)
  class ModuleResolver {
    constructor(@InjectTxRepository(Account) private readonly accounts: Repository<Account>) {}

    @Mutation(() => TransferResultModel)
    transfer(
      @Args('from', { type: () => Int }) from: number,
      @Args('to', { type: () => Int }) to: number,
      @Args('amount', { type: () => Int }) amount: number,
      @Tx() tx: EntityManager,
    ): Promise<{ id: number }> {
      return transfer(reposOf(tx), { from, to, amount });
    }

    @Query(() => PairModel)
    async pair(
      @Args('from', { type: () => Int }) from: number,
      @Args('to', { type: () => Int }) to: number,
      @Tx() tx: EntityManager,
    ): Promise<PairModel> {
      return { from: await tx.findOneBy(Account, { id: from }), toId: to };
    }

    @ResolveField(() => AccountModel, { nullable: true })
    to(@Parent() pair: PairModel): Promise<Account | null> {
      return this.accounts.findOneBy({ id: pair.toId });
    }
  }
  return ModuleResolver;
}

@Module({})
class GraphQLBenchModule {}

export function graphQLBenchModule(
  variant: 'gql-handwritten' | 'gql-module',
  adapter: AdapterName,
  typeOrmOptions: TypeOrmModuleOptions,
): DynamicModule {
  if (variant === 'gql-handwritten') {
    return {
      module: GraphQLBenchModule,
      imports: [TypeOrmModule.forRoot(typeOrmOptions), graphQLModule(adapter, handwrittenHooks)],
      providers: [HandwrittenResolver],
    };
  }
  const { TransactionalModule, apolloUnitOfWorkPlugin, mercuriusUnitOfWorkHooks } = loadLibrary();
  const hooks: OperationHooks =
    adapter === 'express' ? { apollo: [apolloUnitOfWorkPlugin()] } : { mercurius: mercuriusUnitOfWorkHooks() };
  return {
    module: GraphQLBenchModule,
    imports: [
      TypeOrmModule.forRoot(typeOrmOptions),
      TransactionalModule.forRoot({ guard: 'throw' }),
      TransactionalModule.forFeature([Account, Transfer]),
      graphQLModule(adapter, hooks),
    ],
    providers: [moduleResolver()],
  };
}
