import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type INestApplication, Logger, type LoggerService, type LogLevel, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DataSource } from 'typeorm';
import { AppModule } from './app.module';
import { DatabaseSettingsModule, DatabaseUnreachableError, isConnectionFailure, redactUrl } from './database';

/** Options of {@link bootstrap}. */
export interface BootstrapOptions {
  /** `postgres://…` or `mysql://…` (MariaDB/MySQL). */
  databaseUrl: string;
  /** Default: 0, a free port. */
  port?: number;
  /** Default: `'127.0.0.1'`. */
  host?: string;
  /** Connections in the pool. Default: 10. */
  poolSize?: number;
  /** Longest wait for a pooled connection, in ms; then the request fails with a 503. Default: 5000. */
  acquireTimeoutMs?: number;
  /** The root module. Default: {@link AppModule}; the load demo runs its naive variant too. */
  module?: Type<unknown>;
  /** Tags the app's database connections. Default: `'wallet-sample-app'`. */
  applicationName?: string;
  /**
   * Prepended to every table name (TypeORM `entityPrefix`), so that several copies of the app can share
   * one database: test suites running in parallel, say. Default: none (tables `wallet_*`).
   */
  tablePrefix?: string;
  /** Nest logger. Default: Nest's console logger. */
  logger?: LoggerService | LogLevel[] | false;
}

/** A running sample app. */
export interface SampleApp {
  app: INestApplication;
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url: string;
  dataSource: DataSource;
  /** Stops the server (cutting open connections) and closes the database pool. */
  close(): Promise<void>;
}

/**
 * Builds the app, creates its tables (synchronize) and starts listening: what `npm start`, the load
 * demo and the tests all run.
 * @example
 * const { url, close } = await bootstrap({ databaseUrl: process.env.DATABASE_URL!, poolSize: 4 });
 */
export async function bootstrap(options: BootstrapOptions): Promise<SampleApp> {
  const database = {
    url: options.databaseUrl,
    poolSize: options.poolSize ?? 10,
    acquireTimeoutMs: options.acquireTimeoutMs ?? 5000,
    applicationName: options.applicationName ?? 'wallet-sample-app',
    tablePrefix: options.tablePrefix,
  };
  // The root module, with the settings its TypeOrmModule.forRootAsync() reads.
  const root = { module: options.module ?? AppModule, imports: [DatabaseSettingsModule.forRoot(database)] };
  let app: INestApplication;
  try {
    app = await NestFactory.create(root, {
      logger: options.logger,
      // Throw on a failed start (the default is process.exit(1)): the caller decides, and says it once.
      abortOnError: false,
      // Nest's own logs wait until the app is up (flushLogs below): a failed start logs nothing more.
      bufferLogs: true,
      autoFlushLogs: false,
      // Cut idle keep-alive sockets on close instead of waiting for the clients to hang up.
      forceCloseConnections: true,
    });
  } catch (error) {
    Logger.detachBuffer();
    throw isConnectionFailure(error) ? new DatabaseUnreachableError(redactUrl(options.databaseUrl), error) : error;
  }
  app.flushLogs();
  try {
    await app.listen(options.port ?? 0, options.host ?? '127.0.0.1');
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  const { address, port } = (app.getHttpServer() as Server).address() as AddressInfo;
  const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address.includes(':') ? `[${address}]` : address;
  return { app, url: `http://${host}:${port}`, dataSource: app.get(DataSource), close: () => app.close() };
}
