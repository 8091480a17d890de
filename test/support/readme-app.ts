import type { INestApplication, ModuleMetadata } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { getDataSourceToken } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { postgresUrl, typeormOptions, type Engine } from './databases';

/**
 * Boots the README example's `AppModule` (test/examples/), beside `extra` controllers and providers, on a
 * real port of 127.0.0.1. The module is imported only now: its `TypeOrmModule.forRoot()` reads
 * `DATABASE_URL` when it loads. On PostgreSQL it runs as the README shows it; on MariaDB its data source
 * is replaced by one on MariaDB, since the README's `forRoot()` names PostgreSQL.
 */
export async function bootReadmeApp(engine: Engine, extra: ModuleMetadata = {}): Promise<{ app: INestApplication; url: string }> {
  process.env.DATABASE_URL = postgresUrl();
  const { AppModule } = await import('../examples/app.module');
  const { Account } = await import('../examples/account.entity');
  let builder = Test.createTestingModule({ imports: [AppModule], controllers: extra.controllers, providers: extra.providers });
  if (engine.name === 'mariadb') {
    const options = typeormOptions(engine, { poolSize: 10, applicationName: 'readme-example', entities: [Account] });
    builder = builder.overrideProvider(getDataSourceToken()).useFactory({ factory: () => new DataSource(options).initialize() });
  }
  const app = (await builder.compile()).createNestApplication({ logger: false });
  try {
    await app.listen(0, '127.0.0.1');
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  return { app, url: (await app.getUrl()).replace('[::1]', '127.0.0.1') };
}
