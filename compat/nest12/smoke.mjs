// NestJS 12 (ESM-only) against the built, packed library: a real app, a real PostgreSQL.
// Decorators are applied by hand: this file runs as plain JavaScript, as an ESM consumer would load it.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { Controller, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import pg from 'pg';
import { EntitySchema } from 'typeorm';
import {
  InjectTxRepository,
  NestedConnectionError,
  TransactionalModule,
  TransactionFinishedError,
  TransactionHost,
  Tx,
} from 'nestjs-request-transaction';
import { ConnectionAudit } from 'nestjs-request-transaction/testing';

const url = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const Item = new EntitySchema({
  name: 'CompatItem',
  tableName: 'compat_nest12_items',
  columns: { id: { type: Number, primary: true, generated: true }, name: { type: String } },
});

/** The held route's steps, for the client-disconnect check. */
const held = {};
held.inserted = new Promise((resolve) => (held.signal = resolve));
held.released = new Promise((resolve) => (held.release = resolve));

class ItemsController {
  constructor(items, plain) {
    this.items = items;
    this.plain = plain;
  }
  create(tx) {
    return tx.getRepository(Item).save({ name: 'via @Tx()' });
  }
  createWithRepository() {
    return this.items.save({ name: 'via @InjectTxRepository()' });
  }
  async hold(tx) {
    await tx.getRepository(Item).save({ name: 'held, then abandoned by its client' });
    held.signal();
    await held.released;
    try {
      await tx.query('SELECT 1');
      held.after = 'ran';
    } catch (error) {
      held.after = error instanceof TransactionFinishedError ? 'finished' : String(error);
    }
  }
  async nested() {
    await this.items.count();
    try {
      await this.plain.count();
      return { caught: false };
    } catch (error) {
      return { caught: error instanceof NestedConnectionError };
    }
  }
}
const method = (name, ...decorators) => {
  const descriptor = Object.getOwnPropertyDescriptor(ItemsController.prototype, name);
  for (const decorate of decorators) decorate(ItemsController.prototype, name, descriptor);
};
method('create', Post('tx'));
Tx()(ItemsController.prototype, 'create', 0);
method('createWithRepository', Post('repository'));
method('nested', Post('nested'));
method('hold', Post('hold'));
Tx()(ItemsController.prototype, 'hold', 0);
InjectTxRepository(Item)(ItemsController, undefined, 0);
InjectRepository(Item)(ItemsController, undefined, 1);
Controller('items')(ItemsController);

class AppModule {}
Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url, poolSize: 1, connectTimeoutMS: 2000, entities: [Item], synchronize: true }),
    TypeOrmModule.forFeature([Item]),
    TransactionalModule.forRoot({ guard: 'throw' }),
    TransactionalModule.forFeature([Item]),
  ],
  controllers: [ItemsController],
})(AppModule);

const observer = new pg.Client({ connectionString: url });
await observer.connect();
await observer.query('DROP TABLE IF EXISTS compat_nest12_items');
const app = await NestFactory.create(AppModule, { logger: ['error'] });
await app.listen(0, '127.0.0.1');
const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
const { DataSource } = await import('typeorm');
const audit = ConnectionAudit.attach(app.get(DataSource));
try {
  const post = async (path) => {
    const response = await fetch(`${base}/items/${path}`, { method: 'POST' });
    return { status: response.status, body: await response.json() };
  };
  assert.equal((await post('tx')).status, 201);
  assert.equal((await post('repository')).status, 201);
  const { rows } = await observer.query('SELECT name FROM compat_nest12_items ORDER BY id');
  assert.deepEqual(rows.map((r) => r.name), ['via @Tx()', 'via @InjectTxRepository()']);
  assert.deepEqual((await post('nested')).body, { caught: true });
  // A client that disconnects mid-request: rolled back at once, the handler's later query refused.
  const host = app.get(TransactionHost);
  const client = new AbortController();
  const abandoned = fetch(`${base}/items/hold`, { method: 'POST', signal: client.signal }).catch(() => 'aborted');
  await held.inserted;
  client.abort();
  assert.equal(await abandoned, 'aborted');
  for (let i = 0; i < 500 && host.stats().rollbacks === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(host.stats().rollbacks, 1);
  held.release();
  for (let i = 0; i < 500 && held.after === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(held.after, 'finished');
  const after = await observer.query('SELECT name FROM compat_nest12_items ORDER BY id');
  assert.deepEqual(after.rows.map((r) => r.name), ['via @Tx()', 'via @InjectTxRepository()']);
  audit.assertOneConnectionPerUnit();
  const { version } = JSON.parse(
    (await import('node:fs')).readFileSync(new URL('./node_modules/@nestjs/core/package.json', import.meta.url)),
  );
  console.log(`NestJS ${version}: commit, transactional repository, guard, client disconnect and audit work on the built package.`);
} finally {
  audit.detach();
  await app.close();
  await observer.query('DROP TABLE IF EXISTS compat_nest12_items');
  await observer.end();
}
