/**
 * Every transport gets a unit of work per handler call: microservice messages and events (proven on
 * the TCP transport) and WebSocket messages (`@SubscribeMessage`, on the `ws` adapter). The reply
 * leaves after COMMIT; a failing handler rolls back, then its error reaches the filters and the client.
 */
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type INestMicroservice,
  type RpcExceptionFilter,
  UseFilters,
  UseInterceptors,
} from '@nestjs/common';
import {
  type ClientProxy,
  ClientProxyFactory,
  EventPattern,
  MessagePattern,
  type MicroserviceOptions,
  Payload,
  RpcException,
  Transport,
} from '@nestjs/microservices';
import { WsAdapter } from '@nestjs/platform-ws';
import { Test } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import {
  BaseWsExceptionFilter,
  MessageBody,
  SubscribeMessage,
  WebSocketGateway,
  WsException,
  type WsResponse,
} from '@nestjs/websockets';
import type { AddressInfo, Server } from 'node:net';
import { concatMap, firstValueFrom, from, type Observable, throwError } from 'rxjs';
import { DataSource, type EntityManager } from 'typeorm';
import WebSocket from 'ws';
import { TransactionalModule, TransactionHost, TransactionInterceptor, Tx } from '../../lib';
import { createApp } from '../support/app';
import { armCommitGate, CommitGate, commitGate } from '../support/commit-gate';
import { engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { waitFor } from '../support/observer';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

interface Message {
  label: string;
  fail?: boolean;
}

/** What the handlers saw; reset before each test. */
let seen: { units: Array<string | null>; inserted: Latch; release?: Latch } = { units: [], inserted: latch() };
let host: TransactionHost;

async function write(tx: EntityManager, message: Message): Promise<void> {
  seen.units.push(host.current()?.name ?? null);
  await tx.insert(Item, { label: message.label });
}

/** Sends every error's message to the client (Nest's own filter hides those of non-RpcExceptions). */
@Catch()
class RpcErrorFilter implements RpcExceptionFilter<Error> {
  catch(exception: Error): Observable<never> {
    return throwError(() => ({ status: 'error', message: exception.message }));
  }
}

@Controller()
@UseFilters(RpcErrorFilter)
class TransfersMessages {
  @MessagePattern('transfers.create')
  async create(@Payload() message: Message, @Tx() tx: EntityManager): Promise<{ unitOfWork: string | null }> {
    await write(tx, message);
    if (message.fail) throw new RpcException(`transfer ${message.label} failed after its write`);
    return { unitOfWork: host.current()?.name ?? null };
  }

  /** Streams one value per label, each after its write. */
  @MessagePattern('transfers.batch')
  batch(@Payload() labels: string[], @Tx() tx: EntityManager): Observable<string> {
    return from(labels).pipe(
      concatMap(async (label) => {
        await write(tx, { label });
        return label;
      }),
    );
  }

  @EventPattern('transfers.created')
  async created(@Payload() message: Message, @Tx() tx: EntityManager): Promise<void> {
    await write(tx, message);
    seen.inserted.resolve();
    if (message.fail) throw new Error(`event ${message.label} failed after its write`);
  }
}

/** Sends a gateway handler's error to its client: the `ws` adapter's default filter sends nothing. */
@Catch()
class SendErrorFilter extends BaseWsExceptionFilter {
  override catch(exception: unknown, hostArgs: ArgumentsHost): void {
    const socket = hostArgs.switchToWs().getClient<WebSocket>();
    socket.send(JSON.stringify({ event: 'error', data: exception instanceof Error ? exception.message : String(exception) }));
  }
}

/** Nest binds no global interceptor to gateways: the gateway binds it. */
@WebSocketGateway({ path: '/ws' })
@UseFilters(SendErrorFilter)
@UseInterceptors(TransactionInterceptor)
class EventsGateway {
  @SubscribeMessage('events')
  async events(@MessageBody() message: Message, @Tx() tx: EntityManager): Promise<WsResponse<{ unitOfWork: string | null }>> {
    await write(tx, message);
    seen.inserted.resolve();
    await seen.release?.promise;
    if (message.fail) throw new WsException(`message ${message.label} failed after its write`);
    return { event: 'events', data: { unitOfWork: host.current()?.name ?? null } };
  }
}

/** The same handler, on a gateway that does not bind the interceptor. */
@WebSocketGateway({ path: '/ws-unbound' })
@UseFilters(SendErrorFilter)
class UnboundGateway {
  @SubscribeMessage('events')
  events(@MessageBody() message: Message, @Tx() tx: EntityManager): Promise<void> {
    return write(tx, message);
  }
}

describe.each(engines)('transports on $name', (engine) => {
  const db = suiteObserver(engine);

  function database(applicationName: string) {
    return TypeOrmModule.forRoot({
      ...typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] }),
      subscribers: [CommitGate],
    });
  }

  describe('a microservice on the TCP transport', () => {
    const applicationName = `transports-e2e-rpc-${engine.name}`;
    let app: INestMicroservice;
    let client: ClientProxy;
    let dataSource: DataSource;

    beforeAll(async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [database(applicationName), TransactionalModule.forRoot()],
        controllers: [TransfersMessages],
      }).compile();
      app = moduleRef.createNestMicroservice<MicroserviceOptions>({
        transport: Transport.TCP,
        options: { host: '127.0.0.1', port: 0 },
        logger: false,
      });
      await app.listen();
      const { port } = app.unwrap<Server>().address() as AddressInfo;
      client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      await client.connect();
      dataSource = app.get<DataSource>(getDataSourceToken());
      host = app.get(TransactionHost);
      await db.query(`DELETE FROM ${TABLE}`);
    });

    beforeEach(() => {
      seen = { units: [], inserted: latch() };
    });

    afterEach(async () => {
      commitGate.release.resolve();
      await expectNothingLeaked({ dataSource, db, applicationName });
      await db.query(`DELETE FROM ${TABLE}`);
    });

    afterAll(async () => {
      client?.close();
      await app?.close();
    });

    it('runs a @MessagePattern handler in a unit of work named after its pattern, and commits', async () => {
      const reply = await firstValueFrom(client.send('transfers.create', { label: 'rpc' }));
      expect(reply).toEqual({ unitOfWork: 'RPC transfers.create' });
      expect(await labelsIn(db, TABLE)).toEqual(['rpc']);
    });

    it('sends the reply only after COMMIT', async () => {
      armCommitGate();
      let replied = false;
      const reply = firstValueFrom(client.send('transfers.create', { label: 'held' })).then((value: unknown) => {
        replied = true;
        return value;
      });
      await commitGate.reached.promise;
      // The handler returned; its COMMIT is held. A round trip to the database later, no reply yet.
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(replied).toBe(false);

      commitGate.release.resolve();
      expect(await reply).toEqual({ unitOfWork: 'RPC transfers.create' });
      expect(await labelsIn(db, TABLE)).toEqual(['held']);
    });

    it('rolls back a failing handler, and the client gets its error', async () => {
      await expect(firstValueFrom(client.send('transfers.create', { label: 'failing', fail: true }))).rejects.toEqual(
        expect.objectContaining({ message: 'transfer failing failed after its write' }),
      );
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('gives each message its own unit of work', async () => {
      const replies = await Promise.all([
        firstValueFrom(client.send('transfers.create', { label: 'one' })),
        firstValueFrom(client.send('transfers.create', { label: 'two', fail: true })).catch(() => 'failed'),
        firstValueFrom(client.send('transfers.create', { label: 'three' })),
      ]);
      expect(replies).toEqual([{ unitOfWork: 'RPC transfers.create' }, 'failed', { unitOfWork: 'RPC transfers.create' }]);
      expect(await labelsIn(db, TABLE)).toEqual(['one', 'three']);
    });

    it('streams every value of an Observable handler, all after COMMIT', async () => {
      armCommitGate();
      const values: unknown[] = [];
      const done = latch();
      client.send<string>('transfers.batch', ['a', 'b', 'c']).subscribe({
        next: (value) => values.push(value),
        complete: () => done.resolve(),
        error: (error: unknown) => done.reject(error),
      });
      await commitGate.reached.promise;
      // Every value was produced; COMMIT is held. A round trip to the database later, none has arrived.
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(values).toEqual([]);
      commitGate.release.resolve();
      await done.promise;
      expect(values).toEqual(['a', 'b', 'c']);
      expect(await labelsIn(db, TABLE)).toEqual(['a', 'b', 'c']);
    });

    it('runs an @EventPattern handler in a unit of work: committed, or rolled back when it fails', async () => {
      const before = host.stats();
      await firstValueFrom(client.emit('transfers.created', { label: 'event' }));
      await seen.inserted.promise;
      await waitFor(async () => expect(await labelsIn(db, TABLE)).toEqual(['event']));
      expect(seen.units).toEqual(['RPC transfers.created']);

      seen.inserted = latch();
      await firstValueFrom(client.emit('transfers.created', { label: 'failed event', fail: true }));
      await seen.inserted.promise;
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));
      expect(await labelsIn(db, TABLE)).toEqual(['event']);
    });
  });

  describe('a microservice connected to an HTTP application', () => {
    const applicationName = `transports-e2e-hybrid-${engine.name}`;

    /** A hybrid application with a TCP microservice, and a client of it; closed by the returned function. */
    async function hybrid(inheritAppConfig: boolean): Promise<{ client: ClientProxy; close(): Promise<void> }> {
      let microservice: INestMicroservice | undefined;
      const testApp = await createApp({
        adapter: 'express',
        imports: [database(applicationName), TransactionalModule.forRoot()],
        controllers: [TransfersMessages],
        configure: (app) => {
          microservice = app.connectMicroservice<MicroserviceOptions>(
            { transport: Transport.TCP, options: { host: '127.0.0.1', port: 0 } },
            { inheritAppConfig },
          );
        },
      });
      await testApp.app.startAllMicroservices();
      host = testApp.app.get(TransactionHost);
      const { port } = microservice!.unwrap<Server>().address() as AddressInfo;
      const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
      await client.connect();
      const dataSource = testApp.app.get<DataSource>(getDataSourceToken());
      return {
        client,
        close: async () => {
          client.close();
          await expectNothingLeaked({ dataSource, db, applicationName });
          await testApp.close();
        },
      };
    }

    beforeEach(async () => {
      seen = { units: [], inserted: latch() };
      await db.query(`DELETE FROM ${TABLE}`);
    });

    it('runs its handlers in units of work when connected with inheritAppConfig', async () => {
      const { client, close } = await hybrid(true);
      try {
        expect(await firstValueFrom(client.send('transfers.create', { label: 'hybrid' }))).toEqual({
          unitOfWork: 'RPC transfers.create',
        });
        expect(await labelsIn(db, TABLE)).toEqual(['hybrid']);
      } finally {
        await close();
      }
    });

    it('without inheritAppConfig, fails @Tx() with a NoTransactionError that says how to bind the interceptor', async () => {
      const { client, close } = await hybrid(false);
      try {
        await expect(firstValueFrom(client.send('transfers.create', { label: 'unbound' }))).rejects.toEqual({
          status: 'error',
          message: expect.stringMatching(/^@Tx\(\) was used outside a unit of work\..+\{ inheritAppConfig: true \}/),
        });
        expect(await labelsIn(db, TABLE)).toEqual([]);
      } finally {
        await close();
      }
    });
  });

  describe('a WebSocket gateway on the ws adapter', () => {
    const applicationName = `transports-e2e-ws-${engine.name}`;
    let socket: WebSocket;
    /** Messages the server sent, in order. */
    let received: Array<{ event: string; data: unknown }>;
    let next: Latch;

    // Registered before the app's leak check, which runs after it.
    afterEach(() => {
      seen.release?.resolve();
      commitGate.release.resolve();
      socket.close();
    });
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => ({
        adapter: 'express',
        imports: [database(applicationName), TransactionalModule.forRoot()],
        providers: [EventsGateway, UnboundGateway],
        configure: (app) => app.useWebSocketAdapter(new WsAdapter(app)),
      }),
    });

    async function connect(path = '/ws'): Promise<WebSocket> {
      const ws = new WebSocket(`${testApp.url.replace('http', 'ws')}${path}`);
      ws.on('message', (raw: Buffer) => {
        received.push(JSON.parse(raw.toString()) as { event: string; data: unknown });
        next.resolve();
      });
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      return ws;
    }

    /** Sends a message and resolves with the server's next message. */
    async function ask(message: Message): Promise<{ event: string; data: unknown }> {
      next = latch();
      socket.send(JSON.stringify({ event: 'events', data: message }));
      await next.promise;
      return received[received.length - 1];
    }

    beforeAll(() => {
      host = testApp.get(TransactionHost);
    });

    beforeEach(async () => {
      seen = { units: [], inserted: latch() };
      received = [];
      next = latch();
      socket = await connect();
    });

    it('runs each @SubscribeMessage call in its own unit of work, named after its message, and commits', async () => {
      expect(await ask({ label: 'first' })).toEqual({ event: 'events', data: { unitOfWork: 'WS message events' } });
      expect(await ask({ label: 'second', fail: true })).toEqual({
        event: 'error',
        data: 'message second failed after its write',
      });
      expect(await ask({ label: 'third' })).toEqual({ event: 'events', data: { unitOfWork: 'WS message events' } });
      expect(seen.units).toEqual(['WS message events', 'WS message events', 'WS message events']);
      // The failed message rolled back alone.
      expect(await labelsIn(db, TABLE)).toEqual(['first', 'third']);
    });

    it('sends the answer only after COMMIT', async () => {
      armCommitGate();
      next = latch();
      socket.send(JSON.stringify({ event: 'events', data: { label: 'held' } }));
      await commitGate.reached.promise;
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(received).toEqual([]);
      commitGate.release.resolve();
      await next.promise;
      expect(received).toEqual([{ event: 'events', data: { unitOfWork: 'WS message events' } }]);
      expect(await labelsIn(db, TABLE)).toEqual(['held']);
    });

    it('tells how to bind the interceptor when a gateway without it uses @Tx()', async () => {
      const unbound = await connect('/ws-unbound');
      try {
        next = latch();
        unbound.send(JSON.stringify({ event: 'events', data: { label: 'unbound' } }));
        await next.promise;
        expect(received).toEqual([
          {
            event: 'error',
            data: expect.stringMatching(
              /^@Tx\(\) was used outside a unit of work\..+ add @UseInterceptors\(TransactionInterceptor\) to the gateway/,
            ),
          },
        ]);
      } finally {
        unbound.close();
      }
    });

    it('rolls back the unit of work of a message whose client disconnects before the answer', async () => {
      const before = host.stats();
      seen.release = latch();
      socket.send(JSON.stringify({ event: 'events', data: { label: 'abandoned' } }));
      await seen.inserted.promise;
      socket.close();
      // The adapter stops listening to the answer: the unit of work rolls back at once.
      await waitFor(() => expect(host.stats().rollbacks).toBe(before.rollbacks + 1));
      seen.release.resolve();
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect(host.stats().commits).toBe(before.commits);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });
  });
});
