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
    return {
      module: DatabaseSettingsModule,
      providers: [{ provide: DATABASE_SETTINGS, useValue: settings }],
      exports: [DATABASE_SETTINGS],
    };
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
    // Nest's default is 10 attempts 3 s apart: a wrong URL would take half a minute to say so. One
    // attempt, and no "Retrying (1)…" log for it: bootstrap() reports the failure (DatabaseUnreachableError).
    retryAttempts: 0,
    toRetry: () => false,
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

/** The database at the settings' URL did not accept a connection when the app started. */
export class DatabaseUnreachableError extends Error {
  override name = 'DatabaseUnreachableError';

  constructor(
    /** The URL without its password. */
    readonly url: string,
    cause: unknown,
  ) {
    super(`the database at ${url} did not accept a connection (${reasonOf(cause)})`, { cause });
  }
}

/** Driver and socket errors that mean "no connection to the database": refused, unknown host, bad login… */
const CONNECTION_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNRESET',
  '28P01',
  '28000',
  '3D000', // PostgreSQL: bad password, no such role, no such database
  'ER_ACCESS_DENIED_ERROR',
  'ER_BAD_DB_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'PROTOCOL_CONNECTION_LOST',
]);

/** Whether `error` (from starting the app) says that the database could not be reached. */
export function isConnectionFailure(error: unknown): boolean {
  const inner = innerErrors(error);
  if (inner !== undefined) return inner.some(isConnectionFailure);
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && CONNECTION_FAILURES.has(code);
}

// Duck-typed rather than instanceof: socket errors may come from another realm (a test runner's).
function reasonOf(error: unknown): string {
  const inner = innerErrors(error);
  if (inner !== undefined && inner.length > 0) return [...new Set(inner.map(reasonOf))].join('; ');
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(error);
}

/** An AggregateError's errors (node-postgres tries every address of a host name). */
function innerErrors(error: unknown): unknown[] | undefined {
  const errors = (error as { errors?: unknown } | null)?.errors;
  return Array.isArray(errors) ? errors : undefined;
}

/** `url` without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(the database URL)';
  }
}
