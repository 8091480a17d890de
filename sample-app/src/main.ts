/**
 * `npm start`: the sample app on DATABASE_URL, or on an embedded PostgreSQL it starts (and stops) itself.
 *
 *   npm start                                                  # embedded PostgreSQL, port 3000
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npm start
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test PORT=3001 npm start
 *
 * Settings: DATABASE_URL, PORT (3000), HOST (127.0.0.1), POOL_SIZE (10).
 * Ctrl-C (SIGINT), SIGTERM or SIGHUP stops the server and the embedded database, and deletes its files.
 */
import 'reflect-metadata';
import { bootstrap, type SampleApp } from './bootstrap';
import { DatabaseUnreachableError } from './database';
import { type DatabaseServer, startDatabaseServer, STOP_SIGNALS } from './database-server';
import { type DemoData, seedDemoData } from './seed';

/** A stop that takes longer than this (a database that does not answer) exits anyway. */
const STOP_TIMEOUT_MS = 10_000;

let database: Promise<DatabaseServer> | undefined;
let sample: Promise<SampleApp> | undefined;
let stopping = false;

async function start(): Promise<void> {
  for (const signal of STOP_SIGNALS) process.on(signal, () => void stop(signal, 0));

  if (!process.env.DATABASE_URL) console.log('DATABASE_URL is not set: starting an embedded PostgreSQL…');
  database = startDatabaseServer();
  const { url: databaseUrl, label } = await database;
  if (stopping) return;

  sample = bootstrap({
    databaseUrl,
    port: Number(process.env.PORT ?? 3000),
    host: process.env.HOST ?? '127.0.0.1',
    poolSize: Number(process.env.POOL_SIZE ?? 10),
  });
  const { app, url } = await sample;
  printWelcome(url, label, await seedDemoData(app));
}

/** Closes the app and stops the embedded database (whichever exist), then exits with `code`. */
async function stop(why: string, code: number): Promise<void> {
  if (stopping) {
    console.error(`${why} again: exiting without waiting.`);
    process.exit(1);
  }
  stopping = true;
  // A failed start has said why (startFailed): it stops without a word more.
  if (code === 0) console.log(`\n${why}: stopping…`);
  setTimeout(() => {
    console.error(`Not stopped after ${STOP_TIMEOUT_MS / 1000} s: exiting anyway.`);
    process.exit(1);
  }, STOP_TIMEOUT_MS).unref();
  // A terminal's Ctrl-C reaches the embedded server too (same process group), which then shuts down on
  // its own: stop it at once, beside the app rather than after it, so that its exit is not missed.
  const results = await Promise.allSettled([sample?.then((app) => app.close()), database?.then((db) => db.stop())]);
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  // A failed start already said why; its rejection shows up here again.
  if (code === 0) for (const failure of failures) console.error(`While stopping: ${String(failure)}`);
  if (code === 0) console.log('Stopped.');
  process.exit(code !== 0 || failures.length > 0 ? Math.max(code, 1) : 0);
}

function printWelcome(url: string, database: string, demo: DemoData): void {
  const [a, b] = demo.accountIds;
  const json = "-H 'content-type: application/json'";
  console.log(`
Wallet sample app listening on ${url}  (database: ${database})

Try:
  curl ${url}/accounts
  curl -X POST ${url}/transfers ${json} -d '{"from":${a},"to":${b},"amount":1250}'
  curl -X POST ${url}/transfers ${json} -d '{"from":${a},"to":${a},"amount":-5}'    # 400, nothing written
  curl '${url}/reports/balances?accounts=${demo.accountIds.join(',')}'
  curl ${url}/webhooks/${demo.webhookId}
  curl -X POST ${url}/webhooks/${demo.webhookId}/deliveries ${json} -d '{"event":"transfer.created"}'
  curl -i -X DELETE ${url}/people/${demo.personIds.at(-1) ?? 1}

Ctrl-C stops it.`);
}

/** One message: what failed and what to do about it. */
function startFailed(error: unknown): string {
  if (error instanceof DatabaseUnreachableError && process.env.DATABASE_URL) {
    return (
      `Could not start: ${error.message}.\n` +
      `Start that database server or fix DATABASE_URL; or unset DATABASE_URL to run on an embedded PostgreSQL ` +
      `that npm start starts and stops itself:\n  unset DATABASE_URL; npm start`
    );
  }
  if (error instanceof DatabaseUnreachableError) return `Could not start: ${error.message}.`;
  return `Could not start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
}

start().catch((error: unknown) => {
  console.error(startFailed(error));
  void stop('start failed', 1);
});
