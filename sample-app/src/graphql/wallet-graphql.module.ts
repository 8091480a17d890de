import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { Module } from '@nestjs/common';
import { GraphQLModule } from '@nestjs/graphql';
import { apolloUnitOfWorkPlugin, TransactionalModule } from 'nestjs-request-transaction';
import { LedgerEntry } from '../transfers/ledger-entry.entity';
import { WalletResolver } from './wallet.resolver';

/** `POST /graphql`: the wallet on Apollo Server, one unit of work per operation. */
@Module({
  imports: [
    GraphQLModule.forRoot<ApolloDriverConfig>({
      driver: ApolloDriver,
      autoSchemaFile: true,
      // @ResolveField() resolvers join their operation's unit of work through the interceptor.
      fieldResolverEnhancers: ['interceptors'],
      // Ends each operation's unit of work before its response is sent.
      plugins: [apolloUnitOfWorkPlugin()],
    }),
    TransactionalModule.forFeature([LedgerEntry]),
  ],
  providers: [WalletResolver],
})
export class WalletGraphQLModule {}
