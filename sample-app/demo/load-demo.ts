/**
 * `npm run demo`: seeds 000 and 002 under load. The same two routes — a webhook delivery that reads the
 * encrypted URL inside its transaction, and a person's deletion with follow-up work — served first the
 * naive way (a hand-made transaction per request and a second pooled connection inside it), then with
 * TransactionalModule; same pool, same clients, one after the other. Prints, for each: successful
 * requests/s, errors, timeouts, p50/p99 latency; then the ratio.
 *
 * Settings (env): DATABASE_URL (default: an embedded PostgreSQL), DEMO_DURATION_S (10), DEMO_CONCURRENCY (200),
 * DEMO_POOL_SIZE (4), DEMO_ACQUIRE_TIMEOUT_MS (5000), DEMO_CLIENT_TIMEOUT_MS (15000), DEMO_PEOPLE (30000).
 * It adds its own rows to the wallet_* tables and deletes them afterwards.
 */
import 'reflect-metadata';
import { Between, Like } from 'typeorm';
import { bootstrap, type SampleApp } from '../src/bootstrap';
import { type Variant, VARIANT_MODULES } from './naive/variant';
import { type DatabaseServer, startDatabaseServer, STOP_SIGNALS } from '../src/database-server';
import { AuditEntry } from '../src/people/audit-entry.entity';
import { Person } from '../src/people/person.entity';
import { WebhookDelivery } from '../src/webhooks/webhook-delivery.entity';
import { Webhook } from '../src/webhooks/webhook.entity';
import { type LoadRequest, type LoadResult, okPerSecond, percentile, runLoad } from './load-generator';

const settings = {
  durationS: setting('DEMO_DURATION_S', 10),
  concurrency: setting('DEMO_CONCURRENCY', 200),
  poolSize: setting('DEMO_POOL_SIZE', 4),
  acquireTimeoutMs: setting('DEMO_ACQUIRE_TIMEOUT_MS', 5000),
  clientTimeoutMs: setting('DEMO_CLIENT_TIMEOUT_MS', 15_000),
  people: setting('DEMO_PEOPLE', 30_000),
};
/** The library's variant must serve at least this many times the naive one's successful requests/s. */
const TARGET_RATIO = 50;
const EVENT = 'demo.ping';

function setting(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!(Number.isInteger(value) && value > 0))
    throw new Error(`${name} must be a whole number above 0, got ${process.env[name]}`);
  return value;
}

/** What a variant's run starts from: one webhook, a range of people to delete. */
interface Fixtures {
  webhookId: number;
  personIds: number[];
}

async function main(): Promise<void> {
  let database: DatabaseServer | undefined;
  for (const signal of STOP_SIGNALS) {
    process.on(signal, () => {
      console.log(`\n${signal}: stopping…`);
      // The app's pool dies with the process; only the embedded server must be stopped.
      void (database?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  }
  if (!process.env.DATABASE_URL) console.log('DATABASE_URL is not set: starting an embedded PostgreSQL…');
  database = await startDatabaseServer();
  try {
    console.log(
      `\nLoad demo: POST /webhooks/:id/deliveries (seed 000) and DELETE /people/:id (seed 002), alternating.\n` +
        `Pool of ${settings.poolSize} connections (acquisition timeout ${settings.acquireTimeoutMs} ms), ` +
        `${settings.concurrency} concurrent clients, ${settings.durationS} s per variant; database: ${database.label}.\n`,
    );
    const results = new Map<Variant, LoadResult>();
    // Naive first: the library's run cannot be blamed for a database left busy.
    for (const variant of ['naive', 'library'] satisfies Variant[]) {
      results.set(variant, await measure(variant, database.url));
    }
    report(results);
  } finally {
    await database.stop();
  }
}

async function measure(variant: Variant, databaseUrl: string): Promise<LoadResult> {
  process.stdout.write(`${variant}: preparing… `);
  const sample = await bootstrap({
    databaseUrl,
    module: VARIANT_MODULES[variant],
    poolSize: settings.poolSize,
    acquireTimeoutMs: settings.acquireTimeoutMs,
    applicationName: `wallet-demo-${variant}`,
    logger: false,
  });
  try {
    const fixtures = await prepare(sample);
    let nextPerson = 0;
    const next = (n: number): LoadRequest =>
      n % 2 === 1 && nextPerson < fixtures.personIds.length
        ? { method: 'DELETE', path: `/people/${fixtures.personIds[nextPerson++]}` }
        : { method: 'POST', path: `/webhooks/${fixtures.webhookId}/deliveries`, body: { event: EVENT } };
    // Warm up (JIT, connections) with little concurrency: enough for either variant to get through.
    await runLoad({
      url: sample.url,
      concurrency: 2,
      durationMs: 5_000,
      maxRequests: 200,
      timeoutMs: settings.clientTimeoutMs,
      next,
    });
    process.stdout.write(`running ${settings.durationS} s… `);
    const result = await runLoad({
      url: sample.url,
      concurrency: settings.concurrency,
      durationMs: settings.durationS * 1000,
      timeoutMs: settings.clientTimeoutMs,
      next,
    });
    console.log(
      `done (answers: ${Object.entries(result.byStatus)
        .map(([status, n]) => `${n}× ${status}`)
        .join(', ')}).`,
    );
    await cleanUp(sample, fixtures);
    return result;
  } finally {
    await sample.close();
  }
}

/** One webhook (registered through the app, so its URL is encrypted) and `settings.people` people. */
async function prepare(sample: SampleApp): Promise<Fixtures> {
  const response = await fetch(`${sample.url}/webhooks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url: 'https://hooks.example.com/demo?token=s3cr3t' }),
  });
  if (response.status !== 201) throw new Error(`POST /webhooks answered ${response.status}: ${await response.text()}`);
  const { id: webhookId } = (await response.json()) as { id: number };
  const people = sample.dataSource.getRepository(Person);
  const personIds: number[] = [];
  for (let start = 0; start < settings.people; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, settings.people - start) }, (_, i) => ({
      name: `demo-person-${start + i}`,
    }));
    const { identifiers } = await people.insert(batch);
    personIds.push(...identifiers.map((identifier) => Number(identifier.id)));
  }
  return { webhookId, personIds };
}

/** Deletes what the run added. */
async function cleanUp(sample: SampleApp, { webhookId, personIds }: Fixtures): Promise<void> {
  const ds = sample.dataSource;
  await ds.getRepository(WebhookDelivery).delete({ webhookId, event: EVENT });
  await ds.getRepository(Webhook).delete({ id: webhookId });
  await ds.getRepository(Person).delete({ name: Like('demo-person-%') });
  await ds
    .getRepository(AuditEntry)
    .delete({ action: 'person.deleted', subjectId: Between(Math.min(...personIds), Math.max(...personIds)) });
}

function report(results: Map<Variant, LoadResult>): void {
  const rows = [...results.keys()].map((variant) => {
    const r = results.get(variant) as LoadResult;
    return [
      variant,
      okPerSecond(r).toFixed(1),
      String(r.ok),
      String(r.errors),
      `${r.poolTimeouts} / ${r.clientTimeouts}`,
      percentile(r.latenciesMs, 50).toFixed(0),
      percentile(r.latenciesMs, 99).toFixed(0),
    ];
  });
  const header = ['variant', 'ok req/s', 'ok', 'errors', 'timeouts (pool / client)', 'p50 ms', 'p99 ms'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('   ');
  console.log(`\n${line(header)}\n${rows.map(line).join('\n')}`);
  console.log(
    '(ok req/s: 2xx answers within the window, over the window. ok, errors, timeouts: every request, those in flight at\n' +
      ' the end included. Latency: every answered request, failed ones too. A pool timeout is a 503 sent when no pooled\n' +
      ' connection came free within the acquisition timeout.)',
  );

  const naive = results.get('naive') as LoadResult;
  const library = results.get('library') as LoadResult;
  const ratio = okPerSecond(library) / okPerSecond(naive);
  // Every 2xx, those that came in after the window too, over the whole run: finite unless naive served none at all.
  const overall = library.ok / library.elapsedMs / (naive.ok / naive.elapsedMs);
  const failures = library.errors + library.poolTimeouts + library.clientTimeouts;
  const met = ratio >= TARGET_RATIO && failures === 0;
  const times = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)}×` : '∞');
  console.log(
    `\nlibrary / naive: ${times(ratio)} the successful requests per second` +
      (Number.isFinite(ratio) ? '' : ' (the naive variant completed none within the window)') +
      `; ${times(overall)} counting every success over the whole run, drain included.\n` +
      `library failures: ${failures}. Target (≥ ${TARGET_RATIO}×, no failures): ${met ? 'met' : 'NOT MET'}.`,
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
