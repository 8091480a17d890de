/**
 * Throughput bench: the same transfer endpoint (3 statements, one transaction) written by hand with a
 * QueryRunner per request, and with TransactionalModule (guard 'off' and 'throw'), on Express and
 * Fastify. One server process per variant stays up for the whole adapter; measured runs are
 * interleaved (each round rotates the order) so drift in machine load hits every variant alike.
 *
 *   npm run bench                      # build, compile bench/, run with the defaults
 *   BENCH_ROUNDS=9 BENCH_DURATION=10 npm run bench
 *   node bench/dist/run.js --rounds=3 --duration=3 --adapters=fastify
 *
 * Settings (flag or env): rounds (BENCH_ROUNDS, 5), duration s (BENCH_DURATION, 5), warmup s before
 * each measured run (BENCH_WARMUP, 1), connections (BENCH_CONNECTIONS, 50), pool (BENCH_POOL, 10),
 * accounts (BENCH_ACCOUNTS, 10000), rate (BENCH_RATE: fixed offered req/s, default 0 = unbounded), adapters (BENCH_ADAPTERS, express,fastify), variants
 * (BENCH_VARIANTS: handwritten,module-off,module-throw; diagnostics hand-interceptor, hand-interceptor-als,
 * see app.ts), sync-commit (BENCH_SYNC_COMMIT, off), profile (BENCH_PROFILE: a variant to run
 * under `node --cpu-prof`, profiles in bench/results/profiles/), DATABASE_URL.
 *
 * A script, not a test: it exits 0 whatever the numbers (1 only if it could not run).
 */
import 'reflect-metadata';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { ADAPTERS, type AdapterName, ALL_VARIANTS, dataSourceOptions, SAME_PROCESS_VARIANTS, VARIANTS, type Variant } from './app';
import { Account } from './entities';
import { libraryPath } from './library';
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

// ---------------------------------------------------------------------------------------------
// settings

const flags = new Map<string, string>();
for (const arg of process.argv.slice(2)) {
  const match = /^--([\w-]+)=(.*)$/.exec(arg);
  if (!match) throw new Error(`unknown argument ${arg}: use --name=value (see bench/run.ts)`);
  flags.set(match[1], match[2]);
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
  const values = setting(flag, env, defaults.join(',')).split(',').map((v) => v.trim()) as T[];
  for (const v of values) if (!all.includes(v)) throw new Error(`--${flag}: '${v}' is not one of ${all.join(', ')}`);
  return values;
}

const config = {
  rounds: Math.round(positive('rounds', 'BENCH_ROUNDS', 5)),
  duration: positive('duration', 'BENCH_DURATION', 5),
  warmup: positive('warmup', 'BENCH_WARMUP', 1),
  connections: Math.round(positive('connections', 'BENCH_CONNECTIONS', 50)),
  /** Fixed offered load in requests/s over all connections (autocannon overallRate); 0 = as fast as possible. */
  rate: Math.round(Number(setting('rate', 'BENCH_RATE', '0'))),
  pool: Math.round(positive('pool', 'BENCH_POOL', 10)),
  accounts: Math.round(positive('accounts', 'BENCH_ACCOUNTS', 10_000)),
  adapters: list<AdapterName>('adapters', 'BENCH_ADAPTERS', ADAPTERS),
  variants: list<Variant>('variants', 'BENCH_VARIANTS', ALL_VARIANTS, [...VARIANTS, ...SAME_PROCESS_VARIANTS]),
  syncCommit: setting('sync-commit', 'BENCH_SYNC_COMMIT', 'off'),
  profile: setting('profile', 'BENCH_PROFILE', ''),
  databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
};
/** JIT warm-up of each fresh server process, before the first round. */
const FIRST_WARMUP_S = 3;
const TARGET = 0.97;
const RESULTS_DIR = join(__dirname, '..', 'results');

// ---------------------------------------------------------------------------------------------
// load generation (autocannon 8, CommonJS, no bundled types)

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  duration: number;
}
interface AutocannonRequest {
  setupRequest?: (request: { body?: string }) => { body?: string };
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autocannon = require('autocannon') as (options: {
  url: string;
  method: string;
  headers: Record<string, string>;
  connections: number;
  duration: number;
  overallRate?: number;
  requests: AutocannonRequest[];
}) => Promise<AutocannonResult>;

/** Random distinct accounts: with 10k rows, 50 concurrent transfers rarely wait on each other's locks. */
function randomBody(): string {
  const from = 1 + Math.floor(Math.random() * config.accounts);
  let to = 1 + Math.floor(Math.random() * (config.accounts - 1));
  if (to >= from) to += 1;
  return JSON.stringify({ from, to, amount: 1 + Math.floor(Math.random() * 100) });
}

function load(server: Server, seconds: number): Promise<AutocannonResult> {
  return autocannon({
    url: `${server.url}${server.path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    connections: config.connections,
    duration: seconds,
    ...(config.rate > 0 ? { overallRate: config.rate } : {}),
    requests: [{ setupRequest: (request) => ({ ...request, body: randomBody() }) }],
  });
}

// ---------------------------------------------------------------------------------------------
// servers

interface Server {
  variant: Variant;
  url: string;
  /** The route this variant is served on. */
  path: string;
  child: ChildProcess;
  /** What the server reported when told to stop: connections its pool still had out. */
  stats?: {
    connectedQueryRunners?: number;
    poolTotal?: number;
    poolIdle?: number;
    poolWaiting?: number;
    /** Errors and warnings the app logged, by kind (first line of the message). */
    loggedErrors?: number;
    logged?: Record<string, number>;
  };
}

function startServer(variant: Variant, adapter: AdapterName): Promise<Server> {
  const nodeArgs: string[] = [];
  if (config.profile === variant) {
    const dir = join(RESULTS_DIR, 'profiles');
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${adapter}-${variant}-${Date.now()}.cpuprofile`);
  }
  const child = spawn(process.execPath, [...nodeArgs, join(__dirname, 'server.js'), variant, adapter], {
    env: {
      ...process.env,
      DATABASE_URL: config.databaseUrl,
      BENCH_POOL: String(config.pool),
      BENCH_SYNC_COMMIT: config.syncCommit,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${adapter}/${variant}: no READY within 60 s`)), 60_000);
    child.once('exit', (code) => reject(new Error(`${adapter}/${variant} exited with ${code} before READY`)));
    let server: Server | undefined;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^READY (\d+)$/.exec(line);
      if (match) {
        clearTimeout(timer);
        server = { variant, url: `http://127.0.0.1:${match[1]}`, path: '/transfer', child };
        resolve(server);
      } else if (line.startsWith('STATS ') && server) {
        server.stats = JSON.parse(line.slice('STATS '.length)) as Server['stats'];
      } else {
        process.stdout.write(`[${adapter}/${variant}] ${line}\n`);
      }
    });
  });
}

/** Connections a stopped server still had out of its pool, when idle: must be none. */
function leaks(server: Server): string | undefined {
  const s = server.stats;
  if (s === undefined) return `${server.variant}: no STATS line at shutdown`;
  const out = (s.connectedQueryRunners ?? 0) + (s.poolTotal ?? 0) - (s.poolIdle ?? 0);
  return out > 0 ? `${server.variant}: ${JSON.stringify(s)}` : undefined;
}

/**
 * Waits until a server stops using CPU (at most 3 s): a run ends with requests cut off in flight,
 * and their tail (rollbacks, error responses) must not spill into the next variant's measurement.
 */
async function quiesce(server: Server): Promise<void> {
  let before = cpuSeconds(server.child.pid);
  for (let waited = 0; before !== undefined && waited < 3000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = cpuSeconds(server.child.pid);
    if (now === undefined || now - before < 0.005) return;
    before = now;
  }
}

function stopServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (server.child.exitCode !== null) return resolve();
    const timer = setTimeout(() => server.child.kill('SIGKILL'), 15_000);
    server.child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    server.child.kill('SIGTERM');
  });
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

// ---------------------------------------------------------------------------------------------
// data

async function withDataSource<T>(fn: (ds: DataSource) => Promise<T>, synchronize = false): Promise<T> {
  const ds = new DataSource({
    ...dataSourceOptions(config.databaseUrl, 2, config.syncCommit),
    synchronize,
  } as DataSourceOptions);
  await ds.initialize();
  try {
    return await fn(ds);
  } finally {
    await ds.destroy();
  }
}

const INITIAL_BALANCE = 1_000_000_000;

async function seed(): Promise<string> {
  return withDataSource(async (ds) => {
    const postgres = ds.options.type === 'postgres';
    await ds.query(postgres ? 'TRUNCATE bench_transfers RESTART IDENTITY' : 'TRUNCATE TABLE bench_transfers');
    await ds.query('DELETE FROM bench_accounts');
    for (let start = 1; start <= config.accounts; start += 1000) {
      const rows = [];
      for (let id = start; id < start + 1000 && id <= config.accounts; id++) rows.push({ id, balance: String(INITIAL_BALANCE) });
      await ds.createQueryBuilder().insert().into(Account).values(rows).execute();
    }
    if (postgres) await ds.query('VACUUM ANALYZE bench_accounts');
    const [{ version }] = (await ds.query('SELECT version() AS version')) as { version: string }[];
    return version;
  }, true);
}

/**
 * Every 2xx is a committed transfer: at least one row per 2xx response. A few more rows are expected:
 * autocannon stops a run with requests in flight and counts none of them, though a handler may still
 * commit them (at most `connections` per run). Transfers move money, so the total must not change.
 */
async function audit(responses2xx: number, inFlightBound: number): Promise<string> {
  return withDataSource(async (ds) => {
    const [{ n }] = (await ds.query('SELECT COUNT(*) AS n FROM bench_transfers')) as { n: string }[];
    const [{ total }] = (await ds.query('SELECT SUM(balance) AS total FROM bench_accounts')) as { total: string }[];
    const extra = Number(n) - responses2xx;
    const rowsOk = extra >= 0 && extra <= inFlightBound;
    const balanceOk = BigInt(total) === BigInt(INITIAL_BALANCE) * BigInt(config.accounts);
    return (
      `audit: ${n} transfer rows for ${responses2xx} 2xx responses (+${extra} committed by requests in flight when a ` +
      `run stopped, bound ${inFlightBound}: ${rowsOk ? 'ok' : 'MISMATCH'}); sum of balances ${balanceOk ? 'unchanged' : 'CHANGED'}`
    );
  });
}

// ---------------------------------------------------------------------------------------------
// statistics and report

interface Sample {
  adapter: AdapterName;
  round: number;
  position: number;
  variant: Variant;
  rps: number;
  p50: number;
  p99: number;
  total: number;
  /** Server CPU (user + system) per completed request, in microseconds; undefined off Linux. */
  cpuUs?: number;
  ok: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
const fmt0 = (n: number) => Math.round(n).toLocaleString('en-US');
const fmt3 = (n: number) => n.toFixed(3);

/**
 * Per-round ratios of one adapter, median, min, max: throughput a/b, or with `cpu` the CPU-per-request
 * ratio b/a (so that, as for throughput, below 1 means a costs more).
 */
function ratios(samples: Sample[], a: Variant, b: Variant, cpu = false): { median: number; min: number; max: number } | undefined {
  const values: number[] = [];
  for (let round = 0; round < config.rounds; round++) {
    const x = samples.find((s) => s.round === round && s.variant === a);
    const y = samples.find((s) => s.round === round && s.variant === b);
    if (!x || !y) continue;
    if (!cpu) values.push(x.rps / y.rps);
    else if (x.cpuUs !== undefined && y.cpuUs !== undefined) values.push(y.cpuUs / x.cpuUs);
  }
  if (values.length === 0) return undefined;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

function verdict(value: number): string {
  return value >= TARGET ? `meets ≥ ${TARGET}` : `**BELOW ${TARGET}**`;
}

function report(adapter: AdapterName, samples: Sample[]): string[] {
  const lines = [
    `### ${adapter}`,
    '',
    '| variant | req/s median (min–max) | p99 ms median | req/s vs handwritten (median of round ratios, min–max) | server CPU µs/req median | CPU/req handwritten ÷ variant (median, min–max) | errors / timeouts / non-2xx |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const variant of config.variants) {
    const mine = samples.filter((s) => s.variant === variant);
    const rps = mine.map((s) => s.rps);
    const r = variant === 'handwritten' ? undefined : ratios(samples, variant, 'handwritten');
    const c = variant === 'handwritten' ? undefined : ratios(samples, variant, 'handwritten', true);
    const cpu = mine.map((s) => s.cpuUs).filter((v): v is number => v !== undefined);
    const sum = (k: 'errors' | 'timeouts' | 'non2xx') => mine.reduce((acc, s) => acc + s[k], 0);
    lines.push(
      `| ${variant} | ${fmt0(median(rps))} (${fmt0(Math.min(...rps))}–${fmt0(Math.max(...rps))}) | ` +
        `${median(mine.map((s) => s.p99)).toFixed(1)} | ` +
        `${variant === 'handwritten' ? '1 (baseline)' : r ? `${fmt3(r.median)} (${fmt3(r.min)}–${fmt3(r.max)})${variant.startsWith('module') ? ` ${verdict(r.median)}` : ''}` : 'n/a'} | ` +
        `${cpu.length ? fmt0(median(cpu)) : 'n/a'} | ` +
        `${variant === 'handwritten' ? '1 (baseline)' : c ? `${fmt3(c.median)} (${fmt3(c.min)}–${fmt3(c.max)})` : 'n/a'} | ` +
        `${sum('errors')} / ${sum('timeouts')} / ${sum('non2xx')} |`,
    );
  }
  const sameProcess = ratios(samples, 'module-throw', 'module-throw-route-off');
  const sameProcessCpu = ratios(samples, 'module-throw', 'module-throw-route-off', true);
  if (sameProcess) {
    lines.push(
      '',
      `guard 'throw' vs 'off' in one process (route ratio, median of rounds): ${fmt3(sameProcess.median)} ` +
        `(${fmt3(sameProcess.min)}–${fmt3(sameProcess.max)}), cost ${((1 - sameProcess.median) * 100).toFixed(1)} % — ${verdict(sameProcess.median)}` +
        (sameProcessCpu ? `; by CPU/req: ${fmt3(sameProcessCpu.median)} (${fmt3(sameProcessCpu.min)}–${fmt3(sameProcessCpu.max)})` : ''),
    );
  }
  const guard = ratios(samples, 'module-throw', 'module-off');
  const guardCpu = ratios(samples, 'module-throw', 'module-off', true);
  if (guard) {
    lines.push(
      '',
      `guard 'throw' vs 'off' across two processes (module-throw / module-off req/s, median of round ratios): ${fmt3(guard.median)} ` +
        `(${fmt3(guard.min)}–${fmt3(guard.max)}), cost ${((1 - guard.median) * 100).toFixed(1)} % — ${verdict(guard.median)}` +
        (guardCpu ? `; by CPU/req (off ÷ throw): ${fmt3(guardCpu.median)} (${fmt3(guardCpu.min)}–${fmt3(guardCpu.max)})` : ''),
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const envLine = [
    `BENCH_ROUNDS=${config.rounds}`,
    `BENCH_DURATION=${config.duration}`,
    `BENCH_WARMUP=${config.warmup}`,
    `BENCH_CONNECTIONS=${config.connections}`,
    ...(config.rate > 0 ? [`BENCH_RATE=${config.rate}`] : []),
    `BENCH_POOL=${config.pool}`,
    `BENCH_ACCOUNTS=${config.accounts}`,
    `BENCH_ADAPTERS=${config.adapters.join(',')}`,
    `BENCH_VARIANTS=${config.variants.join(',')}`,
    `BENCH_SYNC_COMMIT=${config.syncCommit}`,
    ...(config.profile ? [`BENCH_PROFILE=${config.profile}`] : []),
  ].join(' ');
  const command = `${envLine} node ${relative(process.cwd(), __filename)}`;
  const dbVersion = await seed();
  const cpu = cpus();
  const header = [
    '## nestjs-request-transaction bench: POST /transfer (UPDATE, UPDATE, INSERT in one transaction)',
    '',
    `- machine: ${cpu[0]?.model ?? 'unknown CPU'}, ${cpu.length} cores, load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `- node ${process.version}; ${dbVersion.split(',')[0]}; ${config.databaseUrl.replace(/\/\/[^@]*@/, '//…@')} (synchronous_commit=${config.syncCommit})`,
    `- library: ${relative(process.cwd(), libraryPath())} (${fingerprint(dirname(libraryPath()))})`,
    `- command: \`${command}\``,
    `- ${config.rounds} rounds × ${config.variants.length} variants per adapter, order rotated each round; ` +
      `${config.duration} s measured after ${config.warmup} s warm-up per run; ${config.connections} connections` +
      `${config.rate > 0 ? ` at a fixed ${config.rate} req/s (compare CPU/req and p99, not req/s)` : ''}; pool ${config.pool}; ` +
      `${config.accounts} accounts`,
  ];
  console.log(header.join('\n'));

  const samples: Sample[] = [];
  const leakReport: string[] = [];
  let responses2xx = 0;
  let runs = 0;
  const started = Date.now();
  for (const adapter of config.adapters) {
    const servers: Server[] = [];
    try {
      for (const variant of config.variants) {
        if (variant !== 'module-throw-route-off') {
          servers.push(await startServer(variant, adapter));
          continue;
        }
        const host = servers.find((s) => s.variant === 'module-throw');
        if (!host) throw new Error('module-throw-route-off is a route of the module-throw server: list module-throw before it');
        servers.push({ ...host, variant, path: '/transfer-guard-off' });
      }
      for (const server of servers) {
        responses2xx += (await load(server, FIRST_WARMUP_S))['2xx'];
        await quiesce(server);
      }
      runs += servers.length;
      for (let round = 0; round < config.rounds; round++) {
        const order = servers.map((_, i) => servers[(i + round) % servers.length]);
        for (const [position, server] of order.entries()) {
          responses2xx += (await load(server, config.warmup))['2xx'];
          await quiesce(server);
          const cpuBefore = cpuSeconds(server.child.pid);
          const r = await load(server, config.duration);
          const cpuAfter = cpuSeconds(server.child.pid);
          responses2xx += r['2xx'];
          runs += 2;
          await quiesce(server);
          const sample: Sample = {
            adapter,
            round,
            position,
            variant: server.variant,
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
          const failed = sample.errors + sample.timeouts + sample.non2xx;
          console.error(
            `  ${adapter} round ${round + 1}/${config.rounds} ${server.variant.padEnd(20)} ${fmt0(sample.rps).padStart(6)} req/s  ` +
              `p99 ${String(sample.p99).padStart(4)} ms  ${sample.cpuUs === undefined ? '' : `${fmt0(sample.cpuUs)} µs CPU/req`}` +
              (failed ? `  !!! ${sample.errors} errors, ${sample.timeouts} timeouts, ${sample.non2xx} non-2xx !!!` : ''),
          );
        }
      }
    } finally {
      // Same-process variants share their host's process: stop (and check) each process once.
      await Promise.all(servers.filter((server) => server.path === '/transfer').map(stopServer));
    }
    const processes = servers.filter((server) => server.path === '/transfer');
    for (const server of processes) {
      const logged = Object.entries(server.stats?.logged ?? {});
      if (logged.length === 0) continue;
      leakReport.push(
        `${adapter}/${server.variant} logged (server side; requests cut off at the end of a run included): ` +
          logged.map(([kind, n]) => `${n}× ${kind}`).join('; '),
      );
    }
    const leaked = processes.map(leaks).filter((l) => l !== undefined);
    leakReport.push(
      leaked.length === 0
        ? `${adapter}: every pool idle at shutdown (0 connections still out, 0 query runners connected)`
        : `!!! ${adapter}: CONNECTIONS STILL OUT AT SHUTDOWN (idle server): ${leaked.join('; ')} !!!`,
    );
  }

  const out: string[] = [''];
  for (const adapter of config.adapters) out.push(...report(adapter, samples.filter((s) => s.adapter === adapter)), '');
  const failed = samples.reduce((n, s) => n + s.errors + s.timeouts + s.non2xx, 0);
  out.push(
    failed === 0
      ? 'errors / timeouts / non-2xx: 0 in every run.'
      : `!!! ${failed} requests FAILED (errors, timeouts or non-2xx): the numbers above are not comparable. !!!`,
  );
  out.push(...leakReport, await audit(responses2xx, runs * config.connections), `wall time ${Math.round((Date.now() - started) / 1000)} s`);
  console.log(out.join('\n'));

  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ command, config, header, samples }, null, 2));
  console.log(`raw samples: ${relative(process.cwd(), file)}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
