/**
 * A GraphQL module that would run resolvers outside their operation's unit of work fails the bootstrap,
 * naming what to add; the GraphQL module set up as the docs say starts.
 */
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { GraphQLModule } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import { TypeOrmModule } from '@nestjs/typeorm';
import { apolloUnitOfWorkPlugin, mercuriusUnitOfWorkHooks, TransactionalModule, TransactionalOptionsError } from '../../lib';
import { createApp } from '../support/app';
import { typeormOptions } from '../support/databases';
import { Order, OrderLine } from '../support/entities';
import { OrdersResolver } from '../support/graphql-app';

const applicationName = 'graphql-setup-e2e';

function start(adapter: 'express' | 'fastify', graphql: ReturnType<typeof GraphQLModule.forRoot>) {
  return createApp({
    adapter,
    imports: [
      TypeOrmModule.forRoot(typeormOptions('postgres', { poolSize: 1, applicationName, entities: [Order, OrderLine] })),
      TypeOrmModule.forFeature([OrderLine]),
      TransactionalModule.forRoot(),
      TransactionalModule.forFeature([OrderLine]),
      graphql,
    ],
    providers: [OrdersResolver],
  });
}

const apollo = (options: Partial<ApolloDriverConfig>) =>
  GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, ...options });
const mercurius = (options: Partial<MercuriusDriverConfig>) =>
  GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true, cache: false, ...options });

describe('GraphQLModule options', () => {
  it.each([
    ['Apollo', 'express', apollo({ fieldResolverEnhancers: ['interceptors'] })],
    ['Mercurius', 'fastify', mercurius({ fieldResolverEnhancers: ['interceptors'] })],
  ] as const)('without the server hook (%s): the bootstrap fails, naming it', async (_name, adapter, graphql) => {
    const error = await start(adapter, graphql).then(
      (app) => app.close(),
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(TransactionalOptionsError);
    expect((error as Error).message).toContain(
      'plugins: [apolloUnitOfWorkPlugin()] (Apollo) or hooks: mercuriusUnitOfWorkHooks() (Mercurius)',
    );
    expect((error as Error).message).not.toContain('fieldResolverEnhancers');
  });

  it.each([
    ['Apollo', 'express', apollo({ plugins: [apolloUnitOfWorkPlugin()] })],
    ['Mercurius', 'fastify', mercurius({ hooks: mercuriusUnitOfWorkHooks() })],
  ] as const)(
    'without interceptors on field resolvers (%s): the bootstrap fails, naming the option',
    async (_name, adapter, graphql) => {
      const error = await start(adapter, graphql).then(
        (app) => app.close(),
        (thrown: unknown) => thrown,
      );
      expect(error).toBeInstanceOf(TransactionalOptionsError);
      expect((error as Error).message).toContain(`fieldResolverEnhancers: ['interceptors']`);
    },
  );

  it.each([
    ['Apollo', 'express', apollo({ fieldResolverEnhancers: ['interceptors'], plugins: [apolloUnitOfWorkPlugin()] })],
    ['Mercurius', 'fastify', mercurius({ fieldResolverEnhancers: ['interceptors'], hooks: mercuriusUnitOfWorkHooks() })],
  ] as const)('set up as documented (%s): the app starts', async (_name, adapter, graphql) => {
    const app = await start(adapter, graphql);
    await app.close();
  });
});
