/**
 * A deadlock the handler catches. MariaDB rolls the victim's whole transaction back, savepoints
 * included: nothing of it may then run in autocommit, and the request may not answer 2xx (with
 * `retry`, it runs again). PostgreSQL aborts only the savepoint the deadlocked statement ran in: a
 * handler that caught it from a nested run goes on and commits.
 */
import { Controller, Param, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EntityManager } from 'typeorm';
import { Transactional, TransactionalModule, TransactionRunner, Tx } from '../../lib';
import { engines, typeormOptions } from '../support/databases';
import { Account, Item, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { call, type Reply } from '../support/http';
import { barrier } from '../support/latch';
import { labelsIn, placeholder } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const ACCOUNTS = tableOf(Account);
const ITEMS = tableOf(Item);

/** Both requests hold their first lock before either asks for its second: one of them deadlocks. */
let bothLocked = barrier(2);
/** Attempts per request label: a retried attempt does not wait at the barrier again. */
const attempts = new Map<string, number>();

@Controller('deadlock')
class DeadlockController {
  constructor(private readonly runner: TransactionRunner) {}

  private async lockBoth(tx: EntityManager, first: number, second: number, label: string): Promise<void> {
    const update = `UPDATE ${ACCOUNTS} SET balance = balance + 1 WHERE id = ${placeholder(engineName(tx), 1)}`;
    await tx.query(update, [first]);
    const attempt = (attempts.get(label) ?? 0) + 1;
    attempts.set(label, attempt);
    if (attempt === 1) await bothLocked.arrive();
    await tx.query(update, [second]);
  }

  private async work(tx: EntityManager, first: number, second: number, nested: boolean): Promise<{ caught?: string }> {
    const label = `${first}->${second}`;
    await tx.insert(Item, { label: `${label}: before` });
    let caught: string | undefined;
    try {
      if (nested) await this.runner.run((inner) => this.lockBoth(inner, first, second, label), { propagation: 'nested' });
      else await this.lockBoth(tx, first, second, label);
    } catch (error) {
      caught = (error as Error).name;
    }
    await tx.insert(Item, { label: `${label}: after` });
    return { caught };
  }

  @Post(':how/:first/:second')
  transfer(@Param('how') how: string, @Param('first') first: string, @Param('second') second: string, @Tx() tx: EntityManager) {
    return this.work(tx, Number(first), Number(second), how === 'nested');
  }

  @Post('retried/:how/:first/:second')
  @Transactional({ retry: { attempts: 3, baseDelayMs: 1 } })
  retried(@Param('how') how: string, @Param('first') first: string, @Param('second') second: string, @Tx() tx: EntityManager) {
    return this.work(tx, Number(first), Number(second), how === 'nested');
  }
}

function engineName(tx: EntityManager): 'postgres' | 'mariadb' {
  return tx.connection.options.type === 'postgres' ? 'postgres' : 'mariadb';
}

describe.each(engines)('a caught deadlock on $name', (engine) => {
  const postgres = engine.name === 'postgres';
  const applicationName = `deadlock-e2e-${engine.name}`;
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item, Account],
    app: () => ({
      adapter: 'express',
      imports: [
        // Two connections: one for each of the two requests that deadlock each other.
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 2, applicationName, entities: [Account, Item] })),
        TransactionalModule.forRoot(),
      ],
      controllers: [DeadlockController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    }),
  });

  beforeEach(async () => {
    bothLocked = barrier(2);
    attempts.clear();
    await db.query(`INSERT INTO ${ACCOUNTS} (id, balance) VALUES (1, 0), (2, 0)`);
  });

  /** Sends A (1 then 2) and B (2 then 1) together; returns the replies with the deadlock's victim second. */
  async function deadlock(
    path: string,
  ): Promise<[Reply<{ caught?: string } & ErrorBody>, Reply<{ caught?: string } & ErrorBody>]> {
    const replies = await Promise.all([
      call<{ caught?: string } & ErrorBody>('POST', `${testApp.url}/deadlock/${path}/1/2`),
      call<{ caught?: string } & ErrorBody>('POST', `${testApp.url}/deadlock/${path}/2/1`),
    ]);
    const victim = replies.findIndex((reply) => reply.status !== 201 || reply.body.caught !== undefined);
    expect(victim).not.toBe(-1);
    return victim === 0 ? [replies[1], replies[0]] : [replies[0], replies[1]];
  }

  const balances = async () =>
    (await db.query<{ balance: unknown }>(`SELECT balance FROM ${ACCOUNTS} ORDER BY id`)).map((row) => Number(row.balance));

  it.each(['nested', 'direct'])(
    'never answers 2xx or runs anything in autocommit after MariaDB ended the transaction (%s)',
    async (how) => {
      const [winner, victim] = await deadlock(how);

      expect(winner.status).toBe(201);
      const labels = await labelsIn(db, ITEMS);
      if (postgres && how === 'nested') {
        // The deadlock aborted the savepoint alone: the victim's outer work goes on and commits.
        expect(victim.status).toBe(201);
        expect(victim.body.caught).toBe('QueryFailedError');
        expect(labels).toHaveLength(4);
        expect(await balances()).toEqual([1, 1]);
      } else {
        // The whole transaction is gone: the victim's later INSERT was refused, nothing of it is left.
        expect(victim.status).toBe(500);
        expect(victim.body.name).toBe('TransactionAbortedError');
        expect(labels).toHaveLength(2);
        expect(labels.every((label) => label.startsWith(labels[0].split(':')[0]))).toBe(true);
        expect(await balances()).toEqual([1, 1]);
      }
    },
  );

  it.each(['nested', 'direct'])('runs the victim again when the route sets retry, instead of failing it (%s)', async (how) => {
    const replies = await Promise.all([
      call('POST', `${testApp.url}/deadlock/retried/${how}/1/2`),
      call('POST', `${testApp.url}/deadlock/retried/${how}/2/1`),
    ]);

    expect(replies.map((reply) => reply.status)).toEqual([201, 201]);
    expect(await labelsIn(db, ITEMS)).toHaveLength(4);
    if (postgres && how === 'nested') {
      // The handler caught the savepoint's deadlock and went on: nothing to retry, the savepoint's update is undone.
      expect(await balances()).toEqual([1, 1]);
    } else {
      expect(await balances()).toEqual([2, 2]);
      expect([...attempts.values()].sort()).toEqual([1, 2]);
    }
  });
});
