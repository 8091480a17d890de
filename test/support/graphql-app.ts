/**
 * A small code-first GraphQL schema for the GraphQL suites: orders with lines (`Order` and `OrderLine` of
 * `entities.ts`: raw SQL names their tables with `tableOf`), a mutation writing two rows, a query whose
 * field resolvers read through the operation's unit of work, and the misuses the library must catch.
 */
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import type { DynamicModule } from '@nestjs/common';
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
import { InjectRepository } from '@nestjs/typeorm';
import DataLoader from 'dataloader';
import { type EntityManager, In, type Repository } from 'typeorm';
import { apolloUnitOfWorkPlugin, InjectTxRepository, mercuriusUnitOfWorkHooks, TransactionHost, Tx } from '../../lib';
import { Order, OrderLine } from './entities';

@ObjectType('Line')
export class LineModel {
  @Field(() => Int)
  id!: number;

  @Field()
  label!: string;
}

@ObjectType('Order')
export class OrderModel {
  @Field(() => Int)
  id!: number;

  @Field()
  label!: string;
}

/** The servers the suites run on: Apollo on Express, Mercurius on Fastify. */
export const servers = [
  { name: 'apollo', adapter: 'express' },
  { name: 'mercurius', adapter: 'fastify' },
] as const;

export type Server = (typeof servers)[number];

/** `GraphQLModule.forRoot()` for `server`, the way the docs say, with batching on. */
export function graphQLModule(server: Server): DynamicModule {
  if (server.name === 'apollo') {
    return GraphQLModule.forRoot<ApolloDriverConfig>({
      driver: ApolloDriver,
      autoSchemaFile: true,
      fieldResolverEnhancers: ['interceptors'],
      plugins: [apolloUnitOfWorkPlugin()],
      allowBatchedHttpRequests: true,
    });
  }
  return GraphQLModule.forRoot<MercuriusDriverConfig>({
    driver: MercuriusDriver,
    autoSchemaFile: true,
    fieldResolverEnhancers: ['interceptors'],
    hooks: mercuriusUnitOfWorkHooks(),
    allowBatchedQueries: true,
    // Mercurius loads its query cache with a dynamic import(), which Jest's CommonJS runtime refuses.
    cache: false,
  });
}

@Resolver(() => OrderModel)
export class OrdersResolver {
  constructor(
    @InjectTxRepository(OrderLine) private readonly lineRepository: Repository<OrderLine>,
    @InjectRepository(OrderLine) private readonly plainLineRepository: Repository<OrderLine>,
    private readonly host: TransactionHost,
  ) {}

  /** Writes two rows: the order, then its line (which fails when its label is taken). */
  @Mutation(() => OrderModel)
  async createOrder(@Args('label') label: string, @Args('line') line: string, @Tx() tx: EntityManager): Promise<OrderModel> {
    const order = await tx.save(Order, { label });
    await tx.save(Object.assign(tx.create(OrderLine, { label: line }), { order: Promise.resolve(order) }));
    return order;
  }

  @Query(() => OrderModel, { nullable: true })
  order(@Args('id', { type: () => Int }) id: number, @Tx() tx: EntityManager): Promise<OrderModel | null> {
    return tx.findOneBy(Order, { id });
  }

  @Query(() => [OrderModel])
  orders(@Args('ids', { type: () => [Int] }) ids: number[], @Tx() tx: EntityManager): Promise<OrderModel[]> {
    return tx.find(Order, { where: { id: In(ids) }, order: { id: 'ASC' } });
  }

  /** Runs no statement. */
  @Query(() => String)
  ping(): string {
    return 'pong';
  }

  @ResolveField(() => [LineModel])
  lines(@Parent() order: OrderModel): Promise<LineModel[]> {
    return this.lineRepository.findBy({ order: { id: order.id } });
  }

  /** Lines through a DataLoader of the operation: one SELECT for the lines of every order in the result. */
  @ResolveField(() => [LineModel])
  batchedLines(@Parent() order: OrderModel, @Context() context: { lineLoader?: DataLoader<number, LineModel[]> }) {
    context.lineLoader ??= new DataLoader(async (orderIds: readonly number[]) => {
      const lines = await this.lineRepository.findBy({ order: { id: In([...orderIds]) } });
      return orderIds.map((id) => lines.filter((line) => line.orderId === id));
    });
    return context.lineLoader.load(order.id);
  }

  /** The unit of work the field resolver runs in. */
  @ResolveField(() => String, { nullable: true })
  unitOfWork(): string | null {
    return this.host.current()?.name ?? null;
  }

  /** The bug the guard catches: a plain repository, a second pooled connection. */
  @ResolveField(() => [LineModel])
  plainLines(@Parent() order: OrderModel): Promise<LineModel[]> {
    return this.plainLineRepository.findBy({ order: { id: order.id } });
  }
}
