/**
 * The long run of the model-based test (test/e2e/model-based.e2e-spec.ts): many more random programs
 * for units of work through the library on PostgreSQL and MariaDB, each checked against what the
 * database holds and against the reference model (test/support/unit-of-work-model.ts). Counts every
 * divergent program instead of stopping at the first, then replays the run to shrink the first one and
 * prints it. Ends with a table: database, property, programs, steps, divergences, seed.
 *
 *   npm run model-check
 *   MODEL_RUNS=20000 MODEL_SEED=42 npm run model-check
 *
 * Settings: MODEL_RUNS (units of work per database, default 5000; the two-unit deadlocks run a tenth
 * of that, the client aborts a twentieth per HTTP adapter), MODEL_SEED (or TEST_SEED; default random),
 * MODEL_DATABASES (default `postgres,mariadb`), DATABASE_URL and MYSQL_URL (default: the machine's
 * `test` databases). Exit code 1 when any program diverged.
 */
import 'reflect-metadata';
import fc from 'fast-check';
import { envValue, mysqlUrl, postgresUrl, redactUrl } from '../test/support/database-urls';
import { adapters } from '../test/support/app';
import { AbortHarness } from '../test/support/unit-of-work-http';
import { type HarnessDatabase, RunnerHarness } from '../test/support/unit-of-work-harness';
import {
  abortProgramArbitrary,
  type Dialect,
  pairArbitrary,
  programArbitrary,
  type Program,
  type ProgramPair,
} from '../test/support/unit-of-work-model';

const env = (name: string, fallback: number): number => {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : Number(value);
};

const RUNS = env('MODEL_RUNS', 5000);
const PAIR_RUNS = env('MODEL_PAIR_RUNS', Math.max(1, Math.round(RUNS / 10)));
const ABORT_RUNS = env('MODEL_ABORT_RUNS', Math.max(1, Math.round(RUNS / 20)));
const SEED = env('MODEL_SEED', env('TEST_SEED', Date.now() % 2 ** 31));
const DATABASES = (process.env.MODEL_DATABASES || 'postgres,mariadb').split(',').map((name) => name.trim()) as Dialect[];

interface Row {
  database: Dialect;
  property: string;
  programs: number;
  steps: number;
  divergences: number;
  seconds: number;
  /** Divergent programs by what differed (the first line of their report). */
  kinds: Map<string, number>;
}

/**
 * Runs `check` on `runs` programs of `arbitrary`, counting the divergent ones; when there are any,
 * replays the same programs (same seed) until the first divergence and prints it shrunk.
 */
async function property<T>(
  row: Omit<Row, 'programs' | 'steps' | 'divergences' | 'seconds' | 'kinds'>,
  arbitrary: fc.Arbitrary<T>,
  runs: number,
  size: (value: T) => number,
  check: (value: T) => Promise<string | undefined>,
): Promise<Row> {
  const started = Date.now();
  const result: Row = { ...row, programs: 0, steps: 0, divergences: 0, seconds: 0, kinds: new Map() };
  process.stdout.write(`${row.database}, ${row.property}: ${runs} programs, seed ${SEED} `);
  await fc.check(
    fc.asyncProperty(arbitrary, async (value) => {
      result.programs += 1;
      result.steps += size(value);
      let report: string | undefined;
      try {
        report = await check(value);
      } catch (error) {
        report = `the harness failed: ${error instanceof Error ? error.stack : String(error)}`;
      }
      if (report !== undefined) {
        result.divergences += 1;
        const kind = report.split('\n')[0];
        result.kinds.set(kind, (result.kinds.get(kind) ?? 0) + 1);
      }
      if (result.programs % 100 === 0) process.stdout.write('.');
    }),
    { seed: SEED, numRuns: runs },
  );
  result.seconds = (Date.now() - started) / 1000;
  process.stdout.write(` ${result.divergences} divergent, ${result.seconds.toFixed(1)} s\n`);
  for (const [kind, count] of [...result.kinds].sort((x, y) => y[1] - x[1]))
    process.stdout.write(`  ${String(count).padStart(5)}  ${kind}\n`);
  if (result.divergences > 0) {
    process.stdout.write('  replaying to shrink the first divergent program…\n');
    const details = await fc.check(
      fc.asyncProperty(arbitrary, async (value) => {
        const report = await check(value);
        if (report !== undefined) throw new Error(report);
      }),
      { seed: SEED, numRuns: runs },
    );
    const message = fc.defaultReportMessage(details);
    const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    const text = message === undefined ? 'the replay found no divergence (one that does not repeat)' : `${message}\n${cause}`;
    process.stdout.write(`${text.replace(/^/gm, '  ')}\n`);
  }
  return result;
}

async function checkDatabase(dialect: Dialect): Promise<Row[]> {
  const database: HarnessDatabase =
    dialect === 'postgres'
      ? { dialect, url: postgresUrl(), directUrl: envValue('DATABASE_DIRECT_URL') }
      : { dialect, url: mysqlUrl() };
  process.stdout.write(`\n${dialect}: ${redactUrl(database.url)}\n`);
  const rows: Row[] = [];
  const harness = await RunnerHarness.start(database);
  try {
    rows.push(
      await property(
        { database: dialect, property: 'units of work' },
        programArbitrary({ dialect }),
        RUNS,
        (program: Program) => program.size,
        (program) => harness.check(program),
      ),
    );
    rows.push(
      await property(
        { database: dialect, property: 'two units that deadlock' },
        pairArbitrary(dialect),
        PAIR_RUNS,
        (pair: ProgramPair) => pair.a.size + pair.b.size,
        (pair) => harness.checkPair(pair),
      ),
    );
  } finally {
    await harness.close();
  }
  for (const adapter of adapters) {
    const http = await AbortHarness.start(database, adapter);
    try {
      rows.push(
        await property(
          { database: dialect, property: `client aborts (${adapter})` },
          abortProgramArbitrary({ dialect }),
          ABORT_RUNS,
          (program: Program) => program.size,
          (program) => http.check(program),
        ),
      );
    } finally {
      await http.close();
    }
  }
  return rows;
}

function table(rows: Row[]): string {
  const header = ['database', 'property', 'programs', 'steps', 'divergences', 'seconds', 'seed'];
  const cells = rows.map((row) => [
    row.database,
    row.property,
    row.programs.toLocaleString('en-US'),
    row.steps.toLocaleString('en-US'),
    String(row.divergences),
    row.seconds.toFixed(1),
    String(SEED),
  ]);
  const lines = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...lines.map((line) => line[i].length)));
  const format = (line: string[]) =>
    `| ${line.map((cell, i) => (i >= 2 && i <= 5 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((width, i) => (i >= 2 && i <= 5 ? `${'-'.repeat(width + 1)}:` : '-'.repeat(width + 2))).join('|')}|`;
  return [format(header), rule, ...cells.map(format)].join('\n');
}

async function main(): Promise<void> {
  process.stdout.write(
    `model check: seed ${SEED}; ${RUNS} units of work, ${PAIR_RUNS} deadlocked pairs, ${ABORT_RUNS} client aborts per adapter, per database\n`,
  );
  const rows: Row[] = [];
  for (const dialect of DATABASES) rows.push(...(await checkDatabase(dialect)));
  process.stdout.write(`\n${table(rows)}\n\n`);
  process.stdout.write(
    `command: MODEL_RUNS=${RUNS} MODEL_SEED=${SEED} MODEL_DATABASES=${DATABASES.join(',')} npm run model-check\n`,
  );
  const divergent = rows.reduce((sum, row) => sum + row.divergences, 0);
  process.stdout.write(divergent === 0 ? 'no divergence\n' : `${divergent} divergent program(s)\n`);
  process.exitCode = divergent === 0 ? 0 : 1;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 2;
});
