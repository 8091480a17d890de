import { type DynamicModule, Global, Module } from '@nestjs/common';
import type { TypeOrmModuleOptions } from '@nestjs/typeorm';
import { Account } from './accounts/account.entity';
import { AuditEntry } from './people/audit-entry.entity';
import { Person } from './people/person.entity';
import { LedgerEntry } from './transfers/ledger-entry.entity';
import { WebhookDelivery } from './webhooks/webhook-delivery.entity';
import { Webhook } from './webhooks/webhook.entity';

/** Every table of the app (all named `wallet_*`). */
export const ENTITIES = [Account, LedgerEntry, Webhook, WebhookDelivery, Person, AuditEntry];

/** What the app needs to know about its database. */
export interface DatabaseSettings {
  /** `postgres://…` or `mysql://…` (MariaDB/MySQL). */
  url: string;
  poolSize: number;
  /** Longest wait for a pooled connection (and for a new connection to open), in ms. */
  acquireTimeoutMs: number;
  /** Tags the connections: PostgreSQL `application_name`, MariaDB connect attribute `program_name`. */
  applicationName: string;
  /** Prepended to every table name (TypeORM `entityPrefix`). */
  tablePrefix?: string;
}

/** The injection token of the {@link DatabaseSettings}: `TypeOrmModule.forRootAsync()` reads them. */
export const DATABASE_SETTINGS = 'DATABASE_SETTINGS';

/** Provides the {@link DatabaseSettings} to the whole application (`bootstrap()` imports it). */
@Global()
@Module({})
export class DatabaseSettingsModule {
  static forRoot(settings: DatabaseSettings): DynamicModule {
    return { module: DatabaseSettingsModule, providers: [{ provide: DATABASE_SETTINGS, useValue: settings }], exports: [DATABASE_SETTINGS] };
  }
}

/**
 * TypeORM options for `settings.url`: PostgreSQL or MariaDB/MySQL, tables created (synchronize), and
 * an acquisition timeout, without which a starved pool waits forever.
 */
export function typeormOptions(settings: DatabaseSettings): TypeOrmModuleOptions {
  const common = {
    entities: ENTITIES,
    poolSize: settings.poolSize,
    synchronize: true,
    entityPrefix: settings.tablePrefix,
    // Nest's default is 10 attempts 3 s apart: a wrong URL would take half a minute to say so.
    retryAttempts: 0,
  } as const;
  const protocol = protocolOf(settings.url);
  if (protocol === 'postgres:' || protocol === 'postgresql:') {
    return {
      ...common,
      type: 'postgres',
      url: settings.url,
      // node-postgres: bounds both opening a connection and waiting for a pooled one.
      connectTimeoutMS: settings.acquireTimeoutMs,
      applicationName: settings.applicationName,
    };
  }
  if (protocol === 'mysql:' || protocol === 'mariadb:') {
    return {
      ...common,
      type: 'mariadb',
      url: settings.url.replace(/^mariadb:/, 'mysql:'),
      // mysql2 pools have no acquisition timeout; TransactionalModule applies this one to it.
      connectTimeout: settings.acquireTimeoutMs,
      extra: { connectAttributes: { program_name: settings.applicationName } },
    };
  }
  throw new Error(`Unsupported database URL protocol '${protocol}': use postgres://… or mysql://… (MariaDB/MySQL).`);
}

function protocolOf(url: string): string {
  try {
    return new URL(url).protocol;
  } catch {
    throw new Error('The database URL is not a URL: use postgres://user:password@host:5432/db or mysql://user@host:3306/db.');
  }
}
