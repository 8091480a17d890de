import { Module, ValidationPipe } from '@nestjs/common';
import { APP_FILTER, APP_PIPE } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from 'nestjs-request-transaction';
import { Account } from '../../src/accounts/account.entity';
import { AccountsModule } from '../../src/accounts/accounts.module';
import { DatabaseErrorFilter } from '../../src/common/database-error.filter';
import { DATABASE_SETTINGS, typeormOptions } from '../../src/database';
import { AuditEntry } from '../../src/people/audit-entry.entity';
import { AuditService } from '../../src/people/audit.service';
import { NotificationsService } from '../../src/people/notifications.service';
import { PeopleController } from '../../src/people/people.controller';
import { PeopleService } from '../../src/people/people.service';
import { Person } from '../../src/people/person.entity';
import { ReportsService } from '../../src/reports/reports.service';
import { WebhookCipher } from '../../src/webhooks/webhook-cipher';
import { Webhook } from '../../src/webhooks/webhook.entity';
import { WebhooksController } from '../../src/webhooks/webhooks.controller';
import { WebhooksService } from '../../src/webhooks/webhooks.service';
import { NaivePeopleService } from './naive-people.service';
import { NaivePersonDeletionController } from './naive-person-deletion.controller';
import { NaiveReportsController } from './naive-reports.controller';
import { NaiveTransfersController } from './naive-transfers.controller';
import { NaiveTransfersService } from './naive-transfers.service';
import { NaiveWebhookDeliveriesController } from './naive-webhook-deliveries.controller';
import { NaiveWebhooksService } from './naive-webhooks.service';

/**
 * The wallet app with its transactional routes written the naive way (see variant.ts): the same
 * routes as AppModule, the same database setup, other controllers for POST /transfers,
 * GET /reports/balances, POST /webhooks/:id/deliveries and DELETE /people/:id.
 */
@Module({
  imports: [
    TypeOrmModule.forRootAsync({ useFactory: typeormOptions, inject: [DATABASE_SETTINGS] }),
    TransactionalModule.forRoot(),
    TransactionalModule.forFeature([Account, Person, AuditEntry]),
    TypeOrmModule.forFeature([Webhook, AuditEntry]),
    AccountsModule,
  ],
  controllers: [
    NaiveTransfersController,
    NaiveReportsController,
    WebhooksController,
    NaiveWebhookDeliveriesController,
    PeopleController,
    NaivePersonDeletionController,
  ],
  providers: [
    NaiveTransfersService,
    ReportsService,
    WebhookCipher,
    WebhooksService,
    NaiveWebhooksService,
    PeopleService,
    AuditService,
    NotificationsService,
    NaivePeopleService,
    { provide: APP_FILTER, useClass: DatabaseErrorFilter },
    {
      provide: APP_PIPE,
      useValue: new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true, stopAtFirstError: true }),
    },
  ],
})
export class NaiveAppModule {}
