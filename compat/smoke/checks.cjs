'use strict';
// The smoke app and its checks, shared by both entries: smoke.cjs (a CommonJS app, as on NestJS 10 and
// 11) and smoke.mjs (an ESM app, as NestJS 12's ESM-only packages make it). Each entry loads the
// packages its own way and hands them to runSmoke(). The app itself is in app.cjs.
//
// On Express and on Fastify, each app against PostgreSQL at DATABASE_URL, with a pool of one
// connection: a committed write, a write rolled back by an error, the guard catching a plain
// repository used after the unit of work's first query, a client that disconnects mid-request,
// a request-scoped controller, a microservice (@MessagePattern over TCP, a hybrid app) whose write
// commits and whose failure rolls back, manual binding with forRoot({ mount: false }), and one
// connection per unit of work throughout. Every check is judged on its own and on the database's
// state, read through a separate connection; a failed check does not stop the others.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const { TABLE, ON_PURPOSE, createApp, defineApp, defineManualApp } = require('./app.cjs');
const CHECK_TIMEOUT_MS = 15_000;

/**
 * Runs every check on Express, then on Fastify; prints one PASS/FAIL line per check and a summary.
 * Resolves to true when every check passed.
 */
async function runSmoke(packages) {
  const url = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
  printStack(packages);
  const observer = new packages.pg.Client({ connectionString: url });
  await observer.connect();
  const results = [];
  try {
    await observer.query(`DROP TABLE IF EXISTS ${TABLE}`);
    for (const adapter of ['express', 'fastify']) {
      await smokeOn(adapter, { ...packages, url, observer, results });
    }
  } finally {
    await observer.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => undefined);
    await observer.end();
  }
  const passed = results.filter((result) => result.ok).length;
  console.log(`SUMMARY ${passed}/${results.length} checks passed`);
  return passed === results.length;
}

/**
 * The checks, in order, each given the running app's handles (see smokeOn). Every one is judged on
 * the database's state as a separate connection sees it, not on the response alone.
 */
const CHECKS = [
  {
    name: 'committed write (@Tx())',
    async run({ adapter, post, rows }) {
      const name = `${adapter}: commit`;
      const { status } = await post(`items/commit/${encodeURIComponent(name)}`);
      assert.equal(status, 201, 'POST answered');
      assert.equal(await rows(name), 1, 'rows committed');
    },
  },
  {
    name: 'write rolled back on error (@InjectTxRepository)',
    async run({ adapter, post, rows }) {
      const name = `${adapter}: rollback`;
      const { status, body } = await post(`items/rollback/${encodeURIComponent(name)}`);
      assert.equal(`${status} ${body?.message}`, `409 ${ON_PURPOSE}`, 'POST answered');
      assert.equal(await rows(name), 0, 'rows left by the failed request');
    },
  },
  {
    name: "guard: plain repository after the unit's first query -> NestedConnectionError",
    async run({ post }) {
      const { status, body } = await post('items/guard');
      assert.equal(status, 201, 'POST answered');
      assert.deepEqual(body, { counted: true, caught: 'NestedConnectionError' }, 'the plain repository call');
    },
  },
  {
    name: 'client disconnect mid-request: rolled back, later query refused',
    async run({ adapter, base, defs, rows }) {
      const name = `${adapter}: disconnect`;
      const held = defs.held;
      try {
        const abandoned = fetch(`${base}/items/hold/${encodeURIComponent(name)}`, {
          method: 'POST',
          signal: held.client.signal,
        }).then(
          (response) => `answered ${response.status}`,
          () => 'aborted',
        );
        const first = await Promise.race([held.inserted.then(() => 'inserted'), abandoned]);
        assert.equal(first, 'inserted', 'the held route');
        held.client.abort();
        assert.equal(await abandoned, 'aborted');
        await within(5000, 'no rollback (afterRollback hook) after the client disconnected', held.rolledBack);
        held.release();
        assert.equal(await held.after, 'TransactionFinishedError', "the handler's query after the rollback");
        assert.equal(await rows(name), 0, 'rows left by the abandoned request');
      } finally {
        // Never leave the handler (and with it the pool's one connection) waiting.
        held.release();
      }
    },
  },
  {
    name: 'request-scoped controller: committed write',
    async run({ adapter, post, rows, defs }) {
      const name = `${adapter}: request-scoped`;
      const before = defs.ScopedController.instances;
      const { status } = await post(`scoped/commit/${encodeURIComponent(name)}`);
      assert.equal(status, 201, 'POST answered');
      assert.equal(defs.ScopedController.instances, before + 1, 'controller instances made for the request');
      assert.equal(await rows(name), 1, 'rows committed');
    },
  },
  {
    name: 'request-scoped controller: write rolled back on error',
    async run({ adapter, post, rows }) {
      const name = `${adapter}: request-scoped rollback`;
      const { status, body } = await post(`scoped/rollback/${encodeURIComponent(name)}`);
      assert.equal(`${status} ${body?.message}`, `409 ${ON_PURPOSE}`, 'POST answered');
      assert.equal(await rows(name), 0, 'rows left by the failed request');
    },
  },
  {
    name: 'microservice @MessagePattern (TCP): write committed before the reply',
    async run({ adapter, send, rows }) {
      const name = `${adapter}: message`;
      const reply = await send('items.create', { name });
      assert.equal(reply?.name, name, 'the reply');
      // The reply is sent after COMMIT: the row is there the moment it arrives.
      assert.equal(await rows(name), 1, 'rows committed when the reply arrived');
    },
  },
  {
    name: 'microservice @MessagePattern (TCP): write rolled back on error',
    async run({ adapter, send, rows }) {
      const name = `${adapter}: message rollback`;
      const error = await send('items.fail', { name }).then(
        () => assert.fail('the handler failed, yet the reply was a success'),
        (reason) => reason,
      );
      // Our own error, not one from the write: the write ran, then was rolled back.
      assert.equal(error?.message, ON_PURPOSE, 'the error reply');
      assert.equal(await rows(name), 0, 'rows left by the failed message');
    },
  },
  {
    name: 'forRoot({ mount: false }) + @UseInterceptors(TransactionInterceptor)',
    run: manualBinding,
  },
  {
    name: 'one connection per unit of work (ConnectionAudit)',
    async run({ audit }) {
      assert.ok(audit, 'ConnectionAudit.attach() failed');
      assert.ok(audit.units().length > 0, 'the audit saw no unit of work');
      audit.assertOneConnectionPerUnit();
    },
  },
];

/** One app (HTTP on `adapter`, and a TCP microservice) and every check against it. */
async function smokeOn(adapter, env) {
  const { testing, typeorm, microservices, rxjs, observer, results } = env;
  const logged = [];
  const report = (name, failure) => {
    results.push({ adapter, name, ok: failure === undefined });
    console.log(
      `  ${failure === undefined ? 'PASS' : 'FAIL'}  ${adapter.padEnd(8)} ${name}${failure ? `\n          ${failure}` : ''}`,
    );
  };
  const defs = defineApp(env);
  let app;
  let client;
  let audit;
  try {
    try {
      const port = await freePort();
      app = await createApp(env, adapter, defs.AppModule, logged);
      // inheritAppConfig: the global enhancers (an APP_INTERCEPTOR among them) apply to its handlers too.
      app.connectMicroservice(
        { transport: microservices.Transport.TCP, options: { host: '127.0.0.1', port } },
        { inheritAppConfig: true },
      );
      await app.startAllMicroservices();
      await app.listen(0, '127.0.0.1');
      client = microservices.ClientProxyFactory.create({
        transport: microservices.Transport.TCP,
        options: { host: '127.0.0.1', port },
      });
      await client.connect();
    } catch (error) {
      for (const { name } of CHECKS) report(name, `the app did not start: ${describe(error)}`);
      return;
    }
    try {
      audit = testing.ConnectionAudit.attach(app.get(typeorm.DataSource));
    } catch (error) {
      logged.push(`ConnectionAudit.attach(): ${describe(error)}`);
    }
    const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
    const handles = {
      env,
      adapter,
      defs,
      base,
      audit,
      logged,
      async post(route) {
        const response = await fetch(`${base}/${route}`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
        const text = await response.text();
        return { status: response.status, body: text === '' ? undefined : JSON.parse(text) };
      },
      send: (pattern, data) => rxjs.lastValueFrom(client.send(pattern, data)),
      rows: async (name) => (await observer.query(`SELECT name FROM ${TABLE} WHERE name = $1`, [name])).rows.length,
    };
    for (const { name, run } of CHECKS) {
      const seen = logged.length;
      let failure;
      try {
        await within(CHECK_TIMEOUT_MS, `${name} did not finish`, run(handles));
      } catch (error) {
        failure = describe(error);
        const serverError = logged.slice(seen).find(Boolean);
        if (serverError !== undefined) failure += ` | the app logged: ${serverError}`;
      }
      report(name, failure);
    }
  } finally {
    defs.held.release();
    audit?.detach();
    await within(10_000, 'client.close()', Promise.resolve(client?.close())).catch(() => undefined);
    await within(10_000, 'app.close()', Promise.resolve(app?.close())).catch(() => undefined);
  }
}

/** A second app: the interceptor bound by hand on one controller, and only there. */
async function manualBinding({ env, adapter, defs, logged, rows }) {
  const { lib } = env;
  assert.equal(typeof lib.TransactionInterceptor, 'function', 'nestjs-request-transaction exports TransactionInterceptor');
  const ManualModule = defineManualApp(env, defs.Item);
  const app = await createApp(env, adapter, ManualModule, logged);
  try {
    await app.listen(0, '127.0.0.1');
    const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
    const post = (route) => fetch(`${base}/${route}`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
    const bound = `${adapter}: manually bound`;
    assert.equal((await post(`manual/bound/${encodeURIComponent(bound)}`)).status, 201, 'the bound route answered');
    assert.equal(await rows(bound), 1, 'rows committed by the bound route');
    // Without the interceptor the route has no unit of work: a transactional repository refuses.
    const seen = logged.length;
    const unbound = `${adapter}: not bound`;
    assert.equal((await post(`unbound/${encodeURIComponent(unbound)}`)).status, 500, 'the unbound route answered');
    assert.match(logged.slice(seen).join('\n'), /outside a unit of work/, "the unbound route's error");
    logged.length = seen; // expected: not the cause of a later failure of this check
    assert.equal(await rows(unbound), 0, 'rows written by the unbound route');
  } finally {
    await app.close();
  }
}

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function describe(error) {
  if (error instanceof assert.AssertionError) {
    const show = (value) => (value instanceof RegExp ? String(value) : JSON.stringify(value));
    return `${error.message.split('\n')[0]}: expected ${show(error.expected)}, got ${show(error.actual)}`;
  }
  if (error instanceof Error) return `${error.name}: ${error.message.split('\n')[0]}`;
  return typeof error === 'object' ? JSON.stringify(error) : String(error);
}

function printStack(packages) {
  const version = (name) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(process.cwd(), 'node_modules', name, 'package.json'), 'utf8')).version;
    } catch {
      return '?';
    }
  };
  console.log(
    `nestjs-request-transaction ${version('nestjs-request-transaction')} on NestJS ${version('@nestjs/core')} ` +
      `(${packages.moduleSystem} app), @nestjs/typeorm ${version('@nestjs/typeorm')}, TypeORM ${version('typeorm')}, ` +
      `Fastify ${version('fastify')}, Express ${version('express')}, Node ${process.version}`,
  );
}

module.exports = { runSmoke };
