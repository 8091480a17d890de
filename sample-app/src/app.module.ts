import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from 'nestjs-request-transaction';
import { AccountsModule } from './accounts/accounts.module';
import { DatabaseErrorFilter } from './common/database-error.filter';
import type { Variant } from './common/variant';
import { type DatabaseSettings, typeormOptions } from './database';
import { WalletGraphQLModule } from './graphql/wallet-graphql.module';
import { PeopleModule } from './people/people.module';
import { ReportsModule } from './reports/reports.module';
import { TransfersModule } from './transfers/transfers.module';
import { WebhooksModule } from './webhooks/webhooks.module';

@Module({})
export class AppModule {
  static forRoot(database: DatabaseSettings, variant: Variant): DynamicModule {
    return {
      module: AppModule,
      imports: [
        TypeOrmModule.forRoot(typeormOptions(database)),
        // One request, one transaction, one connection. Guard: 'throw' in development and tests,
        // 'warn' with NODE_ENV=production.
        TransactionalModule.forRoot(),
        AccountsModule,
        TransfersModule.forVariant(variant),
        ReportsModule.forVariant(variant),
        WebhooksModule.forVariant(variant),
        PeopleModule.forVariant(variant),
        WalletGraphQLModule,
      ],
      providers: [{ provide: APP_FILTER, useClass: DatabaseErrorFilter }],
    };
  }
}
