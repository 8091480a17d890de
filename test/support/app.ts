import type { AddressInfo } from 'node:net';
import type { INestApplication, LoggerService, LogLevel, ModuleMetadata } from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';

/** The HTTP platforms every HTTP-facing suite runs on, for `describe.each(adapters)`. */
export const adapters = ['express', 'fastify'] as const;

/** One of {@link adapters}. */
export type AdapterName = (typeof adapters)[number];

/** Options of {@link createApp}. */
export interface CreateAppOptions {
  adapter: AdapterName;
  imports?: ModuleMetadata['imports'];
  controllers?: ModuleMetadata['controllers'];
  providers?: ModuleMetadata['providers'];
  /** Nest logger of the app. Default: `false` (silent); pass one to record or see the logs. */
  logger?: LoggerService | LogLevel[] | false;
  /** Called before `app.init()`: versioning, global prefixes. */
  configure?: (app: INestApplication) => void;
}

/** A Nest app listening on a real port of 127.0.0.1. */
export interface TestApp {
  app: INestApplication;
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url: string;
  /** Closes the app: server, connections still open, modules (data sources included). */
  close(): Promise<void>;
}

/**
 * Builds, initialises and starts a Nest app on a free port, on Express or Fastify. A real
 * listening server, not supertest's in-memory one: client-abort tests need a socket to cut.
 *
 * @example
 * const { url, close } = await createApp({ adapter, imports: [AppModule] });
 * afterAll(close);
 */
export async function createApp(options: CreateAppOptions): Promise<TestApp> {
  const moduleRef = await Test.createTestingModule({
    imports: options.imports,
    controllers: options.controllers,
    providers: options.providers,
  }).compile();

  const appOptions = {
    logger: options.logger ?? false,
    // Close sockets of requests still in flight (e.g. aborted ones) instead of waiting for them.
    forceCloseConnections: true,
  };
  const app =
    options.adapter === 'fastify'
      ? moduleRef.createNestApplication(new FastifyAdapter({ forceCloseConnections: true }), appOptions)
      : moduleRef.createNestApplication(appOptions);

  try {
    options.configure?.(app);
    await app.init();
    if (options.adapter === 'fastify') {
      await (app.getHttpAdapter().getInstance() as { ready(): Promise<unknown> }).ready();
    }
    await app.listen(0, '127.0.0.1');
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }

  const { port } = app.getHttpServer().address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, close: () => app.close() };
}
