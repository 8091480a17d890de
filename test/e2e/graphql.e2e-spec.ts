/**
 * GraphQL: one unit of work per operation, shared by its root and field resolvers, committed before
 * the response is sent; any error in the result rolls the whole operation back. On Apollo (Express)
 * and Mercurius (Fastify), PostgreSQL and MariaDB.
 */
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from '../../lib';
import { engines, QUEUED_ACQUIRE_TIMEOUT_MS, typeormOptions } from '../support/databases';
import { Order, OrderLine, tableOf } from '../support/entities';
import { graphQLModule, OrdersResolver, servers } from '../support/graphql-app';
import { call } from '../support/http';
import { beginStatement, RecordingNestLogger, RecordingSqlLogger, statementKind } from '../support/recording-loggers';
import { placeholder } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

interface GraphQLReply {
  data?: Record<string, any> | null;
  errors?: Array<{ message: string; extensions?: Record<string, unknown> }>;
}

const ORDERS = tableOf(Order);
const LINES = tableOf(OrderLine);

describe.each(engines)('GraphQL on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(servers)('on $name', (server) => {
    const applicationName = `graphql-e2e-${server.name}-${engine.name}`;
    const sql = new RecordingSqlLogger();
    const logs = new RecordingNestLogger();
    const app = suiteApp(db, {
      applicationName,
      tables: [OrderLine, Order],
      app: () => ({
        adapter: server.adapter,
        logger: logs,
        imports: [
          TypeOrmModule.forRoot(
            typeormOptions(engine, {
              poolSize: 1,
              applicationName,
              entities: [Order, OrderLine],
              logger: sql,
              acquireTimeoutMs: QUEUED_ACQUIRE_TIMEOUT_MS,
            }),
          ),
          TypeOrmModule.forFeature([OrderLine]),
          TransactionalModule.forRoot({ guard: 'throw' }),
          TransactionalModule.forFeature([OrderLine]),
          graphQLModule(server),
        ],
        providers: [OrdersResolver],
      }),
    });
    let seq = 0;

    beforeEach(() => {
      sql.clear();
      logs.clear();
    });

    function gql(body: object | object[]) {
      return call<any>('POST', `${app.url}/graphql`, body);
    }

    /** A label no other test (nor another run of this suite) uses. */
    function unique(what: string): string {
      seq += 1;
      return `${what}-${server.name}-${process.pid}-${seq}`;
    }

    async function ordersLabelled(label: string): Promise<number> {
      const p = placeholder(engine.name, 1);
      const rows = await db.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${ORDERS} WHERE label = ${p}`, [label]);
      return Number(rows[0].n);
    }

    async function linesLabelled(label: string): Promise<number> {
      const p = placeholder(engine.name, 1);
      const rows = await db.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${LINES} WHERE label = ${p}`, [label]);
      return Number(rows[0].n);
    }

    const CREATE =
      'mutation CreateOrder($label: String!, $line: String!) { createOrder(label: $label, line: $line) { id label } }';

    describe('a mutation writing two rows', () => {
      it('commits both, in one transaction, before the response', async () => {
        const label = unique('order');
        const line = unique('line');
        const reply = await gql({ query: CREATE, variables: { label, line } });

        expect(reply.body.errors).toBeUndefined();
        expect(reply.body.data.createOrder.label).toBe(label);
        // Committed when the response arrived: a separate connection sees both rows.
        expect(await ordersLabelled(label)).toBe(1);
        expect(await linesLabelled(line)).toBe(1);
        expect(sql.transactionControl().map(statementKind)).toEqual([statementKind(beginStatement(engine.name)), 'COMMIT']);
      });
    });

    describe('a mutation whose second write fails', () => {
      it('rolls back the first write and answers data: null with the error', async () => {
        const taken = unique('taken');
        await gql({ query: CREATE, variables: { label: unique('first'), line: taken } });
        const label = unique('rolled-back');

        const reply = await gql({ query: CREATE, variables: { label, line: taken } });

        expect(reply.body.data).toBeNull();
        expect(reply.body.errors).toHaveLength(1);
        expect(await ordersLabelled(label)).toBe(0);
        expect(sql.transactionControl().slice(-1)).toEqual(['ROLLBACK']);
      });

      it('rolls back every root field of the mutation when a later one fails', async () => {
        const taken = unique('taken');
        await gql({ query: CREATE, variables: { label: unique('first'), line: taken } });
        const a = unique('a');
        const b = unique('b');
        const query = `mutation Two($a: String!, $b: String!, $la: String!, $taken: String!) {
          a: createOrder(label: $a, line: $la) { id }
          b: createOrder(label: $b, line: $taken) { id }
        }`;

        const reply = await gql({ query, variables: { a, b, la: unique('line'), taken } });

        expect(reply.body.data).toBeNull();
        expect(await ordersLabelled(a)).toBe(0);
        expect(await ordersLabelled(b)).toBe(0);
      });
    });

    describe('a query with field resolvers', () => {
      it('runs its root and field resolvers in one unit of work, on one connection', async () => {
        const label = unique('order');
        const line = unique('line');
        const created = await gql({ query: CREATE, variables: { label, line } });
        sql.clear();

        const reply = await gql({
          query: 'query OrderWithLines($id: Int!) { order(id: $id) { id label unitOfWork lines { label } } }',
          variables: { id: created.body.data.createOrder.id },
        });

        expect(reply.body).toEqual({
          data: {
            order: { id: created.body.data.createOrder.id, label, unitOfWork: 'query OrderWithLines', lines: [{ label: line }] },
          },
        });
        const runners = new Set(sql.sent().map((entry) => entry.queryRunner));
        expect(runners.size).toBe(1);
        expect(sql.transactionControl().map(statementKind)).toEqual([statementKind(beginStatement(engine.name)), 'COMMIT']);
      });

      it(
        'serves dozens of parallel operations on a pool of one without waiting on itself',
        async () => {
          const ids: number[] = [];
          for (let i = 0; i < 3; i++) {
            const created = await gql({ query: CREATE, variables: { label: unique('order'), line: unique('line') } });
            ids.push(created.body.data.createOrder.id);
          }
          const query = 'query OrderWithLines($id: Int!) { order(id: $id) { id unitOfWork lines { id } } }';

          const replies = await Promise.all(
            Array.from({ length: 40 }, (_, i) => gql({ query, variables: { id: ids[i % ids.length] } })),
          );

          for (const [i, reply] of replies.entries()) {
            expect(reply.body).toEqual({
              data: { order: { id: ids[i % ids.length], unitOfWork: 'query OrderWithLines', lines: [expect.anything()] } },
            });
          }
        },
        QUEUED_ACQUIRE_TIMEOUT_MS,
      );

      it("batches a DataLoader's loads into one statement, inside the operation's unit of work", async () => {
        const created: Array<{ id: number; line: string }> = [];
        for (let i = 0; i < 3; i++) {
          const line = unique('line');
          const reply = await gql({ query: CREATE, variables: { label: unique('order'), line } });
          created.push({ id: reply.body.data.createOrder.id, line });
        }
        sql.clear();

        const reply = await gql({
          query: 'query Batched($ids: [Int!]!) { orders(ids: $ids) { id unitOfWork batchedLines { label } } }',
          variables: { ids: created.map((order) => order.id) },
        });

        expect(reply.body).toEqual({
          data: {
            orders: created.map((order) => ({
              id: order.id,
              unitOfWork: 'query Batched',
              batchedLines: [{ label: order.line }],
            })),
          },
        });
        const kinds = sql.transactionControl({ settings: false }).map(statementKind);
        expect(kinds).toEqual([statementKind(beginStatement(engine.name)), 'COMMIT']);
        // One SELECT of the orders, one of all their lines: the loads of three field resolvers batched.
        expect(sql.statements().filter((statement) => /^SELECT/i.test(statement))).toHaveLength(2);
        expect(new Set(sql.sent().map((entry) => entry.queryRunner)).size).toBe(1);
      });

      it('takes no connection and sends nothing when it runs no statement', async () => {
        const reply = await gql({ query: 'query Ping { ping }' });

        expect(reply.body).toEqual({ data: { ping: 'pong' } });
        expect(sql.entries).toEqual([]);
      });
    });

    describe('the connection guard in a resolver', () => {
      it('names the operation and the field', async () => {
        const created = await gql({ query: CREATE, variables: { label: unique('order'), line: unique('line') } });
        sql.clear();

        const reply = await gql({
          query: 'query Guarded($id: Int!) { ping order(id: $id) { id plainLines { id } } }',
          variables: { id: created.body.data.createOrder.id },
        });

        // A query keeps its partial data: the field that resolved, and null where the error was.
        expect(reply.body.data).toEqual({ ping: 'pong', order: null });
        expect(reply.body.errors).toHaveLength(1);
        const message: string = reply.body.errors[0].message;
        expect(message).toContain('Repository<OrderLine>.findBy()');
        expect(message).toContain('query Guarded, field Order.plainLines');
        expect(message).toContain('OrdersResolver.plainLines');
        // A query whose result has an error rolls back all the same.
        expect(sql.transactionControl().slice(-1)).toEqual(['ROLLBACK']);
      });
    });

    describe('a batched request', () => {
      it('gives each operation its own unit of work', async () => {
        const taken = unique('taken');
        await gql({ query: CREATE, variables: { label: unique('first'), line: taken } });
        const kept = unique('kept');
        const dropped = unique('dropped');

        const reply = await gql([
          { query: CREATE, variables: { label: kept, line: unique('line') } },
          { query: CREATE, variables: { label: dropped, line: taken } },
          { query: 'query Ping { ping }' },
        ]);

        const [first, second, third] = reply.body as GraphQLReply[];
        expect(first.errors).toBeUndefined();
        expect(first.data?.createOrder.label).toBe(kept);
        expect(second.data).toBeNull();
        expect(second.errors).toHaveLength(1);
        expect(third).toEqual({ data: { ping: 'pong' } });
        expect(await ordersLabelled(kept)).toBe(1);
        expect(await ordersLabelled(dropped)).toBe(0);
      });
    });

    describe('in production', () => {
      const nodeEnv = process.env.NODE_ENV;
      afterEach(() => {
        process.env.NODE_ENV = nodeEnv;
      });

      it("keeps the library's detail from the client and logs it", async () => {
        const created = await gql({ query: CREATE, variables: { label: unique('order'), line: unique('line') } });
        process.env.NODE_ENV = 'production';

        const reply = await gql({
          query: 'query Guarded($id: Int!) { order(id: $id) { id plainLines { id } } }',
          variables: { id: created.body.data.createOrder.id },
        });

        const body = JSON.stringify(reply.body.errors);
        expect(reply.body.errors[0].message).toBe('The transaction of query Guarded failed; the server log has the detail.');
        expect(body).not.toMatch(/\.ts\b|\.js\b|OrdersResolver|OrderLine/);
        const logged = logs
          .library('error')
          .map((entry) => entry.message)
          .join('\n');
        expect(logged).toContain('query Guarded, field Order.plainLines');
        expect(logged).toContain('OrdersResolver.plainLines');
      });
    });
  });
});
