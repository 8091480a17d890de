/**
 * Throughput bench: the same NestJS app (same entities, routes, pool and database) written by hand with a
 * QueryRunner per request (bare, and behind a no-op global interceptor), with TransactionalModule (guard
 * 'off' and 'throw'; bound per controller), with typeorm-transactional and with @nestjs-cls/transactional,
 * a realistic app (ValidationPipe, ClassSerializerInterceptor, auth guard) by hand and with the module, on
 * Express and Fastify, plus the same routes on node's http and `pg` alone (the ceiling). Four HTTP workloads: a write transfer, a read, a route without database, an
 * 80/20 read/write mix; two GraphQL ones (a mutation, a query with a field resolver), served by the gql-* variants. The summary checks the targets (variants.ts, TARGETS): met or missed. One server process per variant stays up for the whole adapter (the raw-pg one
 * for the whole run); measured runs are interleaved, each round rotating the order, so drift in machine
 * load hits every variant alike. See bench/README.md.
 *
 *   npm run bench                                   # build, compile bench/, run with the defaults (≈ 25 min)
 *   npm run bench -- --quick                        # a few minutes: one short round, to see it work
 *   npm run bench -- --rounds=6 --duration=5 --svg=docs/bench.svg
 *   node bench/dist/run.js --adapters=fastify --workloads=transfer,read
 *
 * Settings (flag or env): rounds (BENCH_ROUNDS, 4), duration s (BENCH_DURATION, 3), warmup s before each
 * measured run (BENCH_WARMUP, 1), connections (BENCH_CONNECTIONS, 50), pool (BENCH_POOL, 10), accounts
 * (BENCH_ACCOUNTS, 10000), rate (BENCH_RATE: fixed offered req/s, default 0 = unbounded), adapters
 * (BENCH_ADAPTERS, express,fastify), variants (BENCH_VARIANTS, see variants.ts for the opt-in
 * diagnostics), workloads (BENCH_WORKLOADS, transfer,read,nodb,mix,gql-write,gql-read), memory-requests (BENCH_MEMORY_REQUESTS,
 * 100000: requests each server must have served before the last memory snapshot; topped up with the mix),
 * svg (BENCH_SVG: also write the chart there), check (BENCH_CHECK, 1: the preflight that traces each
 * variant's statements), sync-commit (BENCH_SYNC_COMMIT, off), profile (BENCH_PROFILE: a variant to run
 * under `node --cpu-prof`, profiles in bench/results/profiles/), quick (BENCH_QUICK: 1 round of 2 s, no
 * top-up; any other setting still applies), DATABASE_URL.
 *
 * A script, not a test: it exits 0 whatever the numbers (1 only if it could not run, or a variant did not
 * run its statements in one transaction).
 */
import 'reflect-metadata';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { DataSource } from 'typeorm';
import { dataSourceOptions } from './app';
import { renderChart } from './chart';
import { Account } from './entities';
import { libraryPath } from './library';
import type { MemoryReply, ServerStats, TraceReply } from './protocol';
import { fmt0, memoryTable, type MemorySnapshot, type ProcessMemory, type Sample, standingReport, workloadTable } from './report';
import {
  ADAPTERS,
  type AdapterName,
  ALL_VARIANTS,
  BASELINE,
  CEILING,
  DEFAULT_VARIANTS,
  GQL_BASELINE,
  isNestVariant,
  LABELS,
  ONLY_ON,
  runsOn,
  SAME_PROCESS,
  type Variant,
} from './variants';
import {
  AUTHORIZATION,
  type BenchRequest,
  GQL_PAIR,
  GQL_TRANSFER,
  graphQLRequest,
  isGraphQLWorkload,
  nextRequest,
  ROUTES,
  type Workload,
  WORKLOADS,
} from './workloads';

// ---------------------------------------------------------------------------------------------
// settings

const flags = new Map<string, string>();
for (const arg of process.argv.slice(2)) {
  const match = /^--([\w-]+)(?:=(.*))?$/.exec(arg);
  if (!match) throw new Error(`unknown argument ${arg}: use --name=value (see bench/run.ts)`);
  flags.set(match[1], match[2] ?? '1');
}
function setting(flag: string, env: string, fallback: string): string {
  return flags.get(flag) ?? process.env[env] ?? fallback;
}
function positive(flag: string, env: string, fallback: number): number {
  const value = Number(setting(flag, env, String(fallback)));
  if (!(value > 0)) throw new Error(`--${flag} / ${env} must be a number above 0`);
  return value;
}
function list<T extends string>(flag: string, env: string, all: readonly T[], defaults: readonly T[] = all): T[] {
  const values = setting(flag, env, defaults.join(','))
    .split(',')
    .map((v) => v.trim()) as T[];
  for (const v of values) if (!all.includes(v)) throw new Error(`--${flag}: '${v}' is not one of ${all.join(', ')}`);
  return values;
}
const on = (value: string) => !['', '0', 'false', 'no', 'off'].includes(value.toLowerCase());

const quick = on(setting('quick', 'BENCH_QUICK', '0'));
const config = {
  quick,
  rounds: Math.round(positive('rounds', 'BENCH_ROUNDS', quick ? 1 : 4)),
  duration: positive('duration', 'BENCH_DURATION', quick ? 2 : 3),
  warmup: positive('warmup', 'BENCH_WARMUP', 1),
  connections: Math.round(positive('connections', 'BENCH_CONNECTIONS', 50)),
  /** Fixed offered load in requests/s over all connections (autocannon overallRate); 0 = as fast as possible. */
  rate: Math.round(Number(setting('rate', 'BENCH_RATE', '0'))),
  pool: Math.round(positive('pool', 'BENCH_POOL', 10)),
  accounts: Math.round(positive('accounts', 'BENCH_ACCOUNTS', 10_000)),
  adapters: list<AdapterName>('adapters', 'BENCH_ADAPTERS', ADAPTERS),
  variants: list<Variant>('variants', 'BENCH_VARIANTS', ALL_VARIANTS, DEFAULT_VARIANTS),
  workloads: list<Workload>('workloads', 'BENCH_WORKLOADS', WORKLOADS),
  /** Variants asked for but measured on none of the workloads asked for (variants.ts, ONLY_ON): not started. */
  idle: [] as Variant[],
  memoryRequests: Math.round(Number(setting('memory-requests', 'BENCH_MEMORY_REQUESTS', quick ? '0' : '100000'))),
  svg: setting('svg', 'BENCH_SVG', ''),
  check: on(setting('check', 'BENCH_CHECK', '1')),
  syncCommit: setting('sync-commit', 'BENCH_SYNC_COMMIT', 'off'),
  profile: setting('profile', 'BENCH_PROFILE', ''),
  databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
};
config.idle = config.variants.filter((v) => !config.workloads.some((w) => runsOn(v, w)));
config.variants = config.variants.filter((v) => !config.idle.includes(v));
for (const [variant, { host }] of Object.entries(SAME_PROCESS) as [Variant, { host: Variant }][]) {
  if (config.variants.includes(variant) && !config.variants.includes(host)) {
    throw new Error(`${variant} is served by the ${host} server: list ${host} too`);
  }
}
/** JIT warm-up of each fresh server process, per workload, before the first round. */
const FIRST_WARMUP_S = 1;
const RESULTS_DIR = join(__dirname, '..', 'results');

// ---------------------------------------------------------------------------------------------
// server processes

interface Proc {
  /** `express/module-throw`, or `raw-pg`. */
  name: string;
  variant: Variant;
  url: string;
  child: ChildProcess;
  /** Responses it has sent, over every load (warm-ups included). */
  served: number;
  memory: MemorySnapshot[];
  /** What it reported when told to stop. */
  stats?: ServerStats;
}

/** What one measured run loads: a variant, the process that serves it, the suffix of its routes. */
interface Target {
  variant: Variant;
  proc: Proc;
  suffix: string;
}

function startProc(variant: Variant, adapter: AdapterName, extraEnv: Record<string, string> = {}): Promise<Proc> {
  const name = variant === CEILING ? variant : `${adapter}/${variant}`;
  const nodeArgs = ['--expose-gc'];
  if (config.profile === variant && !extraEnv.BENCH_TRACE_SQL) {
    const dir = join(RESULTS_DIR, 'profiles');
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name.replace('/', '-')}-${Date.now()}.cpuprofile`);
  }
  const child = spawn(process.execPath, [...nodeArgs, join(__dirname, 'server.js'), variant, adapter], {
    env: {
      ...process.env,
      DATABASE_URL: config.databaseUrl,
      BENCH_POOL: String(config.pool),
      BENCH_SYNC_COMMIT: config.syncCommit,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no READY within 60 s`)), 60_000);
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before READY`)));
    let proc: Proc | undefined;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^READY (\d+)$/.exec(line);
      if (match) {
        clearTimeout(timer);
        proc = { name, variant, url: `http://127.0.0.1:${match[1]}`, child, served: 0, memory: [] };
        resolvePromise(proc);
      } else if (line.startsWith('STATS ') && proc) {
        proc.stats = JSON.parse(line.slice('STATS '.length)) as ServerStats;
      } else {
        process.stdout.write(`[${name}] ${line}\n`);
      }
    });
  });
}

function stopProc(proc: Proc): Promise<void> {
  return new Promise((resolvePromise) => {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) return resolvePromise();
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 15_000);
    proc.child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise();
    });
    proc.child.kill('SIGTERM');
  });
}

let messageId = 0;
/** One request over the server's IPC channel, and its answer. */
function ask<T extends { id: number }>(proc: Proc, type: 'memory' | 'trace'): Promise<T> {
  const id = ++messageId;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      proc.child.off('message', listener);
      reject(new Error(`${proc.name}: no answer to '${type}' within 15 s`));
    }, 15_000);
    const listener = (message: unknown) => {
      if ((message as { id?: number }).id !== id) return;
      clearTimeout(timer);
      proc.child.off('message', listener);
      resolvePromise(message as T);
    };
    proc.child.on('message', listener);
    proc.child.send({ type, id });
  });
}

async function snapshot(procs: Proc[], label: string): Promise<void> {
  for (const proc of procs) {
    const m = await ask<MemoryReply>(proc, 'memory');
    proc.memory.push({ label, requests: proc.served, gc: m.gc, rss: m.rss, heapUsed: m.heapUsed });
  }
}

/** Connections a stopped server still had out of its pool, when idle: must be none. */
function leaks(proc: Proc): string | undefined {
  const s = proc.stats;
  if (s === undefined) return `${proc.name}: no STATS line at shutdown`;
  const out = (s.connectedQueryRunners ?? 0) + (s.poolTotal ?? 0) - (s.poolIdle ?? 0) + (s.poolWaiting ?? 0);
  return out > 0 ? `${proc.name}: ${JSON.stringify(s)}` : undefined;
}

/**
 * CPU seconds (user + system) a process has used, from /proc (Linux); undefined elsewhere. CPU per
 * request is the steadier figure on a shared machine: it does not depend on how much CPU the
 * process was given, only on how much each request needed.
 */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
function cpuSeconds(pid: number | undefined): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat(5) (utime, stime), counted here from field 3 (state).
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/**
 * Waits until a server stops using CPU (at most 3 s): a run ends with requests cut off in flight,
 * and their tail (rollbacks, error responses) must not spill into the next variant's measurement.
 */
async function quiesce(proc: Proc): Promise<void> {
  let before = cpuSeconds(proc.child.pid);
  for (let waited = 0; before !== undefined && waited < 3000; waited += 100) {
    await new Promise((r) => setTimeout(r, 100));
    const now = cpuSeconds(proc.child.pid);
    if (now === undefined || now - before < 0.005) return;
    before = now;
  }
}

// ---------------------------------------------------------------------------------------------
// load generation (autocannon 8, CommonJS, no bundled types)

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
}
interface AutocannonRequest {
  setupRequest?: (request: Record<string, unknown>) => Record<string, unknown>;
  onResponse?: (status: number, body: string) => void;
}
/** How every variant's answer to POST /transfer starts. */
const TRANSFER_ANSWER = '{"id":';
/** How every GraphQL variant's answer to the transfer mutation starts. */
const GQL_TRANSFER_ANSWER = '{"data":{"transfer":{"id":';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autocannon = require('autocannon') as (options: {
  url: string;
  connections: number;
  duration: number;
  overallRate?: number;
  requests: AutocannonRequest[];
}) => Promise<AutocannonResult>;

interface LoadResult extends AutocannonResult {
  /** Transfers answered with a 2xx: each must have left a row. */
  writes2xx: number;
}

/** Loads issued, with writes among their requests: each may leave up to `connections` rows autocannon never saw answered. */
let writeLoads = 0;
let writes2xx = 0;

async function load(target: Target, workload: Workload, seconds: number): Promise<LoadResult> {
  let writes = 0;
  let graphQLErrors = 0;
  const graphQL = isGraphQLWorkload(workload);
  const result = await autocannon({
    url: target.proc.url,
    connections: config.connections,
    duration: seconds,
    ...(config.rate > 0 ? { overallRate: config.rate } : {}),
    requests: [
      {
        // One random request of the workload each time.
        setupRequest: (request) => {
          const next: BenchRequest = nextRequest(workload, config.accounts, target.suffix);
          return { ...request, method: next.method, path: next.path, headers: next.headers, body: next.body ?? '' };
        },
        // A transfer is known by its answer, `{"id":…}`, not by what the connection sent last: autocannon
        // sends each connection's first request from a buffer the connections share.
        // A GraphQL server answers 200 with `errors` in the body when a resolver failed: a failed request.
        onResponse: (status, body) => {
          if (status < 200 || status >= 300) return;
          if (graphQL && body.includes('"errors"')) graphQLErrors++;
          else if (body.startsWith(TRANSFER_ANSWER) || body.startsWith(GQL_TRANSFER_ANSWER)) writes++;
        },
      },
    ],
  });
  target.proc.served += result.requests.total;
  if (workload === 'transfer' || workload === 'mix' || workload === 'gql-write') writeLoads++;
  writes2xx += writes;
  return { ...result, errors: result.errors + graphQLErrors, '2xx': result['2xx'] - graphQLErrors, writes2xx: writes };
}

// ---------------------------------------------------------------------------------------------
// preflight: every variant runs a request's statements in one transaction, on one connection

const EXPECTED: { route: 'transfer' | 'balances' | 'ping'; statements: number }[] = [
  { route: 'transfer', statements: 3 },
  { route: 'balances', statements: 2 },
  { route: 'ping', statements: 0 },
];

const REALISTIC: Variant[] = ['hand-realistic', 'module-realistic'];

/**
 * The realistic app's pipe and guard are at work: a transfer with an invalid body is refused (400) and
 * sends no statement; a request without the token is refused (401).
 */
async function realisticRefusals(proc: Proc): Promise<{ ok: boolean; text: string }> {
  const invalid = await fetch(`${proc.url}${ROUTES.transfer}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: AUTHORIZATION },
    body: JSON.stringify({ from: 1, to: 2, amount: 'all of it' }),
  });
  await invalid.text();
  const invalidTrace = (await ask<TraceReply>(proc, 'trace')).statements;
  const anonymous = await fetch(`${proc.url}${ROUTES.balances}?from=1&to=2`);
  await anonymous.text();
  const anonymousTrace = (await ask<TraceReply>(proc, 'trace')).statements;
  const ok = invalid.status === 400 && anonymous.status === 401 && invalidTrace.length + anonymousTrace.length === 0;
  return {
    ok,
    text: ok
      ? 'invalid body: 400, no token: 401, no statement'
      : `the ValidationPipe or the auth guard is not at work: invalid body HTTP ${invalid.status} (want 400), no token HTTP ` +
        `${anonymous.status} (want 401), statements ${JSON.stringify([...invalidTrace, ...anonymousTrace])} (want none)`,
  };
}

/** Transactions of a trace, per query runner: each must be BEGIN, its statements, COMMIT. */
function transactionsOf(trace: { runner: number; sql: string }[]): { runner: number; sql: string[] }[] {
  const byRunner = new Map<number, string[]>();
  for (const s of trace) byRunner.set(s.runner, [...(byRunner.get(s.runner) ?? []), s.sql]);
  return [...byRunner].map(([runner, sql]) => ({ runner, sql }));
}

/**
 * The GraphQL variants: the mutation runs BEGIN, its 3 statements, COMMIT on one connection; the query
 * its 2 SELECTs in one transaction, except with @nestjs-cls/transactional, whose field resolver's
 * `@Transactional()` method runs its own: two transactions of one SELECT each, on separate query runners.
 */
async function graphQLPreflight(proc: Proc, variant: Variant): Promise<{ seen: string[]; problems: string[] }> {
  const seen: string[] = [];
  const problems: string[] = [];
  const checks = [
    { what: 'mutation transfer', request: graphQLRequest(GQL_TRANSFER, { from: 1, to: 2, amount: 1 }), transactions: [3] },
    {
      what: 'query pair + field resolver',
      request: graphQLRequest(GQL_PAIR, { from: 1, to: 2 }),
      transactions: variant === 'gql-nestjs-cls' ? [1, 1] : [2],
    },
  ];
  for (const { what, request, transactions } of checks) {
    const response = await fetch(`${proc.url}${request.path}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
    const body = await response.text();
    if (body.startsWith(GQL_TRANSFER_ANSWER)) writes2xx++;
    const trace = (await ask<TraceReply>(proc, 'trace')).statements;
    const found = transactionsOf(trace);
    const ok =
      response.ok &&
      !body.includes('"errors"') &&
      found.length === transactions.length &&
      found.every(
        (t, i) =>
          t.runner !== 0 &&
          /^(BEGIN|START TRANSACTION)/i.test(t.sql[0]) &&
          /^COMMIT/i.test(t.sql[t.sql.length - 1]) &&
          t.sql.length === transactions[i] + 2,
      );
    if (ok) {
      seen.push(
        transactions.length === 1
          ? `${what}: ${found[0].sql[0].split(' ')[0]} + ${transactions[0]} + COMMIT on one connection`
          : `${what}: ${transactions.length} transactions (one per resolver), each ${found[0].sql[0].split(' ')[0]} + 1 + COMMIT`,
      );
    } else {
      problems.push(`${variant} ${what} (HTTP ${response.status}, ${body.slice(0, 200)}): ${JSON.stringify(trace)}`);
    }
  }
  return { seen, problems };
}

async function preflight(): Promise<string[]> {
  const lines: string[] = [];
  const adapter = config.adapters[0];
  const problems: string[] = [];
  for (const variant of config.variants.filter((v) => isNestVariant(v) && !SAME_PROCESS[v])) {
    const proc = await startProc(variant, adapter, { BENCH_TRACE_SQL: '1' });
    try {
      await ask<TraceReply>(proc, 'trace'); // drop the start-up statements
      if (variant.startsWith('gql-')) {
        const checked = await graphQLPreflight(proc, variant);
        lines.push(`- ${LABELS[variant]}: ${checked.seen.join('; ')}`);
        problems.push(...checked.problems);
        continue;
      }
      const suffixes = [''];
      for (const [other, { host, routeSuffix }] of Object.entries(SAME_PROCESS) as [
        Variant,
        { host: Variant; routeSuffix: string },
      ][]) {
        if (host === variant && config.variants.includes(other)) suffixes.push(routeSuffix);
      }
      const seen: string[] = [];
      for (const suffix of suffixes) {
        for (const { route, statements } of EXPECTED) {
          if (suffix && route === 'ping') continue;
          const [from, to] = [1, 2];
          const response =
            route === 'transfer'
              ? await fetch(`${proc.url}${ROUTES.transfer}${suffix}`, {
                  method: 'POST',
                  headers: { 'content-type': 'application/json', authorization: AUTHORIZATION },
                  body: JSON.stringify({ from, to, amount: 1 }),
                })
              : await fetch(
                  `${proc.url}${ROUTES[route]}${route === 'ping' ? '' : suffix}${route === 'balances' ? `?from=${from}&to=${to}` : ''}`,
                  {
                    headers: { authorization: AUTHORIZATION },
                  },
                );
          await response.text();
          if (route === 'transfer' && response.ok) writes2xx++;
          const trace = (await ask<TraceReply>(proc, 'trace')).statements;
          const runners = new Set(trace.map((s) => s.runner));
          const first = trace[0]?.sql ?? '';
          const last = trace[trace.length - 1]?.sql ?? '';
          const ok =
            response.ok &&
            (statements === 0
              ? trace.length === 0
              : runners.size === 1 &&
                !runners.has(0) &&
                /^(BEGIN|START TRANSACTION)/i.test(first) &&
                /^COMMIT/i.test(last) &&
                trace.length === statements + 2);
          const what = `${route}${suffix}`;
          if (ok)
            seen.push(
              statements === 0
                ? `${what}: no statement`
                : `${what}: ${first.split(' ')[0]} + ${statements} + COMMIT on one connection`,
            );
          else problems.push(`${variant} ${what} (HTTP ${response.status}): ${JSON.stringify(trace)}`);
        }
      }
      if (REALISTIC.includes(variant)) {
        const refused = await realisticRefusals(proc);
        if (refused.ok) seen.push(refused.text);
        else problems.push(`${variant}: ${refused.text}`);
      }
      lines.push(`- ${LABELS[variant]}: ${seen.join('; ')}`);
    } finally {
      await stopProc(proc);
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `these variants did not run a request's statements in one transaction on one connection:\n${problems.join('\n')}`,
    );
  }
  if (config.variants.includes(CEILING))
    lines.push(
      `- ${LABELS[CEILING]}: not traced (no TypeORM); BEGIN, the same statements, COMMIT on one pooled client by construction (raw-pg.ts)`,
    );
  return lines;
}

// ---------------------------------------------------------------------------------------------
// data

/**
 * The runner's own connection (pool of 1, never closed while the run lasts): it holds the lock that keeps
 * two bench runs off the same tables, seeds them, and audits them after every run.
 */
let db: DataSource | undefined;
const INITIAL_BALANCE = 1_000_000_000;

async function openDatabase(): Promise<string> {
  db = new DataSource({ ...dataSourceOptions(config.databaseUrl, 1, config.syncCommit), synchronize: true });
  await db.initialize();
  const postgres = db.options.type === 'postgres';
  if (postgres) {
    const [{ locked }] = await db.query<{ locked: boolean }[]>(
      `SELECT pg_try_advisory_lock(hashtext('nestjs-request-transaction bench')) AS locked`,
    );
    if (!locked) {
      throw new Error(
        'another bench run is using the bench tables of this database (it holds the advisory lock ' +
          "hashtext('nestjs-request-transaction bench')): wait for it to finish, or point DATABASE_URL at another database",
      );
    }
  }
  await db.query(postgres ? 'TRUNCATE bench_transfers RESTART IDENTITY' : 'TRUNCATE TABLE bench_transfers');
  await db.query('DELETE FROM bench_accounts');
  for (let start = 1; start <= config.accounts; start += 1000) {
    const rows = [];
    for (let id = start; id < start + 1000 && id <= config.accounts; id++) rows.push({ id, balance: String(INITIAL_BALANCE) });
    await db.createQueryBuilder().insert().into(Account).values(rows).execute();
  }
  if (postgres) await db.query('VACUUM ANALYZE bench_accounts');
  const [{ version }] = await db.query<{ version: string }[]>('SELECT version() AS version');
  return version;
}

/**
 * Every 2xx transfer is a committed transfer: at least one row per 2xx. A few more rows are expected:
 * autocannon stops a run with requests in flight and counts none of them, though a handler may still
 * commit them (at most `connections` per run with writes). Transfers move money: the total must not change.
 */
async function audit(): Promise<{ ok: boolean; text: string }> {
  const bound = writeLoads * config.connections;
  const [{ n }] = await db!.query<{ n: string }[]>('SELECT COUNT(*) AS n FROM bench_transfers');
  const [{ total }] = await db!.query<{ total: string }[]>('SELECT SUM(balance) AS total FROM bench_accounts');
  const extra = Number(n) - writes2xx;
  const rowsOk = extra >= 0 && extra <= bound;
  const balanceOk = BigInt(total) === BigInt(INITIAL_BALANCE) * BigInt(config.accounts);
  return {
    ok: rowsOk && balanceOk,
    text:
      `${n} transfer rows for ${writes2xx} 2xx transfers (+${extra} committed by requests in flight when a ` +
      `run stopped, bound ${bound}: ${rowsOk ? 'ok' : 'MISMATCH'}); sum of balances ${balanceOk ? 'unchanged' : 'CHANGED'}`,
  };
}

/** The audit after every measured run: the first one that fails names the run that broke it. */
let firstBadAudit: string | undefined;
async function auditAfter(what: string): Promise<void> {
  if (firstBadAudit) return;
  const result = await audit();
  if (!result.ok) {
    firstBadAudit = `!!! the audit first failed after ${what}: ${result.text} !!!`;
    console.error(`  ${firstBadAudit}`);
  }
}

// ---------------------------------------------------------------------------------------------
// what was measured

/** Which build was measured: newest mtime and a hash of the package's compiled JS (others rebuild dist/). */
function fingerprint(dir: string): string {
  const hash = createHash('sha256');
  let newest = 0;
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (name.endsWith('.js')) {
        hash.update(name).update(readFileSync(path));
        newest = Math.max(newest, st.mtimeMs);
      }
    }
  };
  walk(dir);
  return `built ${new Date(newest).toISOString()}, sha256(*.js) ${hash.digest('hex').slice(0, 12)}`;
}

function versionOf(pkg: string): string {
  try {
    // Walk up from the entry point: not every package exports its package.json.
    for (let dir = dirname(require.resolve(pkg)); dir !== dirname(dir); dir = dirname(dir)) {
      try {
        const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
        if (manifest.name === pkg) return manifest.version ?? '?';
      } catch {
        // no package.json here: one level up
      }
    }
  } catch {
    // not installed
  }
  return '?';
}

/** Measured runs per round, per adapter. */
function runsPerRound(): number {
  let runs = 0;
  for (const workload of config.workloads) {
    runs += config.variants.filter((v) => runsOn(v, workload)).length;
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------

const rotate = <T>(items: T[], by: number) => items.map((_, i) => items[(i + by) % items.length]);

/** The workloads a variant is measured on, among those of this run. */
const workloadsOf = (variant: Variant) => config.workloads.filter((w) => runsOn(variant, w));

/** Servers measured on some workloads only, left out of the memory top-up: `name (workloads)`. */
const notToppedUp: string[] = [];

/**
 * Loads a server with the mix (or the first workload run) until it has served `config.memoryRequests`
 * requests. A server measured on some workloads only and not on the mix (variants.ts, ONLY_ON) is left
 * as it is: the memory check is the mix's, and topping it up would add minutes to the run.
 */
async function topUp(target: Target, samples: Sample[]): Promise<void> {
  const own = workloadsOf(target.variant);
  if (ONLY_ON[target.variant] && !own.includes('mix')) {
    if (target.proc.served < config.memoryRequests) notToppedUp.push(`${target.proc.name} (${own.join(', ')})`);
    return;
  }
  const workload: Workload = own.includes('mix') ? 'mix' : own[0];
  const measured = samples.filter((s) => s.variant === target.variant && s.workload === workload).map((s) => s.rps);
  let rate = measured.length > 0 ? Math.min(...measured) : 500;
  while (target.proc.served < config.memoryRequests) {
    const missing = config.memoryRequests - target.proc.served;
    const seconds = Math.max(1, Math.min(30, Math.ceil((missing / Math.max(rate, 50)) * 1.05)));
    console.error(
      `  ${target.proc.name}: ${fmt0(target.proc.served)} requests served; ${seconds} s more of ${workload} for the memory check`,
    );
    const r = await load(target, workload, seconds);
    rate = r.requests.average;
    await quiesce(target.proc);
  }
}

async function main(): Promise<void> {
  const settings = [
    `BENCH_ROUNDS=${config.rounds}`,
    `BENCH_DURATION=${config.duration}`,
    `BENCH_WARMUP=${config.warmup}`,
    `BENCH_CONNECTIONS=${config.connections}`,
    ...(config.rate > 0 ? [`BENCH_RATE=${config.rate}`] : []),
    `BENCH_POOL=${config.pool}`,
    `BENCH_ACCOUNTS=${config.accounts}`,
    `BENCH_ADAPTERS=${config.adapters.join(',')}`,
    `BENCH_VARIANTS=${config.variants.join(',')}`,
    `BENCH_WORKLOADS=${config.workloads.join(',')}`,
    `BENCH_MEMORY_REQUESTS=${config.memoryRequests}`,
    `BENCH_SYNC_COMMIT=${config.syncCommit}`,
    ...(config.profile ? [`BENCH_PROFILE=${config.profile}`] : []),
  ].join(' ');
  const command = `${settings} node ${relative(process.cwd(), __filename)}`;
  // Seconds: measured runs (each with its warm-up and a few tenths for quiescing), then per server its
  // start and first warm-up, and the preflight (a start and a few requests per Nest variant).
  const nestServers = config.variants.filter((v) => isNestVariant(v) && !SAME_PROCESS[v]);
  const startAndWarm = nestServers.reduce((s, v) => s + 2 + workloadsOf(v).length * FIRST_WARMUP_S, 0);
  const estimate =
    config.adapters.length * (config.rounds * runsPerRound() * (config.warmup + config.duration + 0.3) + startAndWarm) +
    (config.check ? nestServers.length * 2.5 : 0);
  if (config.variants.includes(CEILING) && !/^postgres(ql)?:/.test(config.databaseUrl)) {
    throw new Error(
      `${CEILING} speaks PostgreSQL only: leave it out (--variants=...) for ${config.databaseUrl.replace(/\/\/[^@]*@/, '//…@')}`,
    );
  }
  const dbVersion = await openDatabase();
  const cpu = cpus();
  const header = [
    '## nestjs-request-transaction bench: the module, its peers, a hand-written baseline and raw pg',
    '',
    `- machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, load average at start ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `- node ${process.version}; ${dbVersion.split(',')[0]}; ${config.databaseUrl.replace(/\/\/[^@]*@/, '//…@')} (synchronous_commit=${config.syncCommit})`,
    `- library: ${relative(process.cwd(), libraryPath())} (${fingerprint(dirname(libraryPath()))})`,
    `- peers: typeorm-transactional ${versionOf('typeorm-transactional')}; @nestjs-cls/transactional ${versionOf('@nestjs-cls/transactional')} + ` +
      `@nestjs-cls/transactional-adapter-typeorm ${versionOf('@nestjs-cls/transactional-adapter-typeorm')} + nestjs-cls ${versionOf('nestjs-cls')}; ` +
      `typeorm ${versionOf('typeorm')}, @nestjs/core ${versionOf('@nestjs/core')}, pg ${versionOf('pg')}`,
    `- command: \`${command}\``,
    `- ${config.rounds} round(s) × ${runsPerRound()} runs per adapter (${config.workloads.length} workloads × the variants), order rotated each round; ` +
      `${config.duration} s measured after ${config.warmup} s warm-up per run; ${config.connections} connections` +
      `${config.rate > 0 ? ` at a fixed ${config.rate} req/s (compare CPU/req and p99, not req/s)` : ''}; pool ${config.pool}; ` +
      `${config.accounts} accounts; expected wall time ≈ ${Math.ceil(estimate / 60)} min (more if servers need topping up to ${fmt0(config.memoryRequests)} requests)`,
    ...Object.entries(ONLY_ON)
      .filter(([v]) => config.variants.includes(v as Variant))
      .map(([v, only]) => `- ${v} is measured on ${only.filter((w) => config.workloads.includes(w)).join(', ')} only`),
    ...config.idle.map((v) => `- ${v} not started: it is measured on ${WORKLOADS.filter((w) => runsOn(v, w)).join(', ')} only`),
  ];
  console.log(header.join('\n'));

  const started = Date.now();
  const checked = config.check ? await preflight() : ['- skipped (--check=0)'];
  console.log(['', 'Statements per request, traced once per variant before measuring:', ...checked].join('\n'));

  const samples: Sample[] = [];
  const leakReport: string[] = [];
  const memory: ProcessMemory[] = [];
  const allProcs: Proc[] = [];
  const ceiling = config.variants.includes(CEILING) ? await startProc(CEILING, config.adapters[0]) : undefined;
  if (ceiling) allProcs.push(ceiling);
  try {
    if (ceiling) await snapshot([ceiling], 'start');
    for (const [a, adapter] of config.adapters.entries()) {
      const procs: Proc[] = [];
      const targets: Target[] = [];
      try {
        for (const variant of config.variants) {
          if (variant === CEILING) {
            targets.push({ variant, proc: ceiling!, suffix: '' });
            continue;
          }
          const same = SAME_PROCESS[variant];
          if (same) {
            const host = procs.find((p) => p.variant === same.host);
            if (!host) throw new Error(`${variant} is a route of the ${same.host} server: list ${same.host} before it`);
            targets.push({ variant, proc: host, suffix: same.routeSuffix });
            continue;
          }
          const proc = await startProc(variant, adapter);
          procs.push(proc);
          allProcs.push(proc);
          targets.push({ variant, proc, suffix: '' });
        }
        // The ceiling's process serves every adapter: warmed up and snapshotted with the first one only.
        const fresh = a === 0 && ceiling ? [...procs, ceiling] : procs;
        await snapshot(procs, 'start');
        for (const proc of fresh) {
          const target = targets.find((t) => t.proc === proc && t.suffix === '')!;
          for (const workload of workloadsOf(target.variant)) {
            await load(target, workload, FIRST_WARMUP_S);
            await quiesce(proc);
          }
        }
        await snapshot(fresh, 'warm');

        for (let round = 0; round < config.rounds; round++) {
          for (const [w, workload] of config.workloads.entries()) {
            const eligible = targets.filter((t) => runsOn(t.variant, workload));
            for (const [position, target] of rotate(eligible, round + w).entries()) {
              await load(target, workload, config.warmup);
              await quiesce(target.proc);
              const cpuBefore = cpuSeconds(target.proc.child.pid);
              const r = await load(target, workload, config.duration);
              const cpuAfter = cpuSeconds(target.proc.child.pid);
              await quiesce(target.proc);
              const sample: Sample = {
                adapter,
                workload,
                round,
                position,
                variant: target.variant,
                rps: r.requests.average,
                p50: r.latency.p50,
                p99: r.latency.p99,
                total: r.requests.total,
                cpuUs:
                  cpuBefore === undefined || cpuAfter === undefined || r.requests.total === 0
                    ? undefined
                    : ((cpuAfter - cpuBefore) * 1e6) / r.requests.total,
                ok: r['2xx'],
                errors: r.errors,
                timeouts: r.timeouts,
                non2xx: r.non2xx,
              };
              samples.push(sample);
              await auditAfter(`${adapter} round ${round + 1} ${workload} ${target.variant}`);
              const failed = sample.errors + sample.timeouts + sample.non2xx;
              console.error(
                `  ${adapter} round ${round + 1}/${config.rounds} ${workload.padEnd(8)} ${target.variant.padEnd(26)} ${fmt0(sample.rps).padStart(6)} req/s  ` +
                  `p99 ${String(sample.p99).padStart(4)} ms  ${sample.cpuUs === undefined ? '' : `${fmt0(sample.cpuUs)} µs CPU/req`}` +
                  (failed ? `  !!! ${sample.errors} errors, ${sample.timeouts} timeouts, ${sample.non2xx} non-2xx !!!` : ''),
              );
            }
          }
          await snapshot(ceiling ? [...procs, ceiling] : procs, `round ${a * config.rounds + round + 1}`);
        }
        const last = a === config.adapters.length - 1;
        for (const proc of last && ceiling ? [...procs, ceiling] : procs) {
          await topUp(
            targets.find((t) => t.proc === proc && t.suffix === '')!,
            samples,
          );
        }
        await snapshot(last && ceiling ? [...procs, ceiling] : procs, 'end');
      } finally {
        await Promise.all(procs.map(stopProc));
      }
      for (const proc of procs) memory.push({ name: proc.name, snapshots: proc.memory });
      leakReport.push(...logged(procs, adapter), connectionsOut(procs, adapter));
    }
  } finally {
    await Promise.all(allProcs.map(stopProc));
  }
  if (ceiling) {
    memory.push({ name: ceiling.name, snapshots: ceiling.memory });
    leakReport.push(...logged([ceiling], CEILING), connectionsOut([ceiling], CEILING));
  }

  const out: string[] = [''];
  for (const adapter of config.adapters) {
    for (const workload of config.workloads) out.push(...workloadTable(adapter, workload, samples, config.variants), '');
  }
  out.push(...standingReport(samples, config.variants), ...memoryTable(memory), '');
  if (notToppedUp.length > 0) {
    out.push(
      `Measured on some workloads only and not topped up to ${fmt0(config.memoryRequests)} requests: ${notToppedUp.join('; ')}.`,
      '',
    );
  }
  const failed = samples.reduce((n, s) => n + s.errors + s.timeouts + s.non2xx, 0);
  out.push(
    failed === 0
      ? 'errors / timeouts / non-2xx: 0 in every run.'
      : `!!! ${failed} requests FAILED (errors, timeouts or non-2xx): the numbers above are not comparable. !!!`,
  );
  const final = await audit();
  out.push(
    ...leakReport,
    `audit: ${final.text}`,
    ...(firstBadAudit ? [firstBadAudit] : []),
    `wall time ${Math.round((Date.now() - started) / 1000)} s`,
  );
  console.log(out.join('\n'));

  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = join(RESULTS_DIR, `bench-${stamp}.json`);
  writeFileSync(file, JSON.stringify({ command, config, header, samples, memory }, null, 2));
  const written = [relative(process.cwd(), file)];
  if (config.variants.includes(BASELINE) || config.variants.includes(GQL_BASELINE)) {
    const svg = renderChart({
      samples,
      adapters: config.adapters,
      workloads: config.workloads,
      variants: config.variants.filter((v) => !SAME_PROCESS[v]),
      title: 'Throughput relative to a hand-written QueryRunner transaction per request (higher is better)',
      subtitle:
        `Median of ${config.rounds} per-round ratio(s), whiskers min–max; ${cpu.length} cores, node ${process.version}, ` +
        `${dbVersion.split(' ').slice(0, 2).join(' ')}, pool ${config.pool}, ${config.connections} connections, ${config.duration} s runs`,
    });
    const svgFile = join(RESULTS_DIR, `bench-${stamp}.svg`);
    writeFileSync(svgFile, svg);
    written.push(relative(process.cwd(), svgFile));
    if (config.svg) {
      const target = resolve(process.cwd(), config.svg);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, svg);
      written.push(relative(process.cwd(), target).startsWith('..') ? target : relative(process.cwd(), target));
    }
  } else {
    written.push(`no chart: it is drawn relative to ${BASELINE} (${GQL_BASELINE} on GraphQL), neither of which was measured`);
  }
  console.log(`raw samples and chart: ${written.join('; ')}`);
}

function logged(procs: Proc[], scope: string): string[] {
  const lines: string[] = [];
  for (const proc of procs) {
    const entries = Object.entries(proc.stats?.logged ?? {});
    if (entries.length === 0) continue;
    lines.push(
      `${scope === CEILING ? '' : `${scope}/`}${proc.variant} logged (server side; requests cut off at the end of a run included): ` +
        entries.map(([kind, n]) => `${n}× ${kind}`).join('; '),
    );
  }
  return lines;
}

function connectionsOut(procs: Proc[], scope: string): string {
  const leaked = procs.map(leaks).filter((l) => l !== undefined);
  return leaked.length === 0
    ? `${scope}: every pool idle at shutdown (0 connections still out, 0 query runners connected)`
    : `!!! ${scope}: CONNECTIONS STILL OUT AT SHUTDOWN (idle server): ${leaked.join('; ')} !!!`;
}

main()
  .then(() => db?.destroy())
  .catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
