import { Module, ValidationPipe } from '@nestjs/common';
import { APP_FILTER, APP_PIPE } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from 'nestjs-request-transaction';
import { AccountsModule } from './accounts/accounts.module';
import { DatabaseErrorFilter } from './common/database-error.filter';
import { DATABASE_SETTINGS, typeormOptions } from './database';
import { WalletGraphQLModule } from './graphql/wallet-graphql.module';
import { PeopleModule } from './people/people.module';
import { ReportsModule } from './reports/reports.module';
import { TransfersModule } from './transfers/transfers.module';
import { WebhooksModule } from './webhooks/webhooks.module';

/** The wallet app. Its database settings come from `DatabaseSettingsModule` (see bootstrap.ts). */
@Module({
  imports: [
    TypeOrmModule.forRootAsync({ useFactory: typeormOptions, inject: [DATABASE_SETTINGS] }),
    // One request, one transaction, one connection. Guard: 'throw' in development and tests,
    // 'warn' with NODE_ENV=production.
    TransactionalModule.forRoot(),
    AccountsModule,
    TransfersModule,
    ReportsModule,
    WebhooksModule,
    PeopleModule,
    WalletGraphQLModule,
  ],
  providers: [
    { provide: APP_FILTER, useClass: DatabaseErrorFilter },
    // Bodies are validated against their DTO classes (class-validator) before a handler runs: a bad
    // body is a 400 listing the problems, and, the transaction being lazy, takes no connection.
    {
      provide: APP_PIPE,
      useValue: new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true, stopAtFirstError: true }),
    },
  ],
})
export class AppModule {}
