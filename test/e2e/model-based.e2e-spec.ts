/**
 * Model-based test of truthful outcomes: random programs for units of work (statements that succeed
 * or fail, caught or not; savepoints one after another and concurrent; nested and joined runs; hooks;
 * deadlocks; clients that disconnect) run through the library on PostgreSQL and MariaDB, and what the
 * library reports — `run()`'s outcome, the unit's state, the hooks that ran, `stats()`, each call's
 * outcome — is checked against what the database holds and against the reference model in
 * `test/support/unit-of-work-model.ts`. A divergence fails with the shrunk program, printed as code.
 *
 *   TEST_SEED=123 MODEL_RUNS=500 npx jest test/e2e/model-based.e2e-spec.ts
 *   TEST_SEED=123 MODEL_PATH='6:1:1:2' npx jest test/e2e/model-based.e2e-spec.ts -t 'on postgres reports'
 *
 * MODEL_RUNS programs per database (default 300), a tenth of that for the two-unit deadlock and a
 * fifteenth per HTTP adapter for client aborts; MODEL_PATH (with `-t` naming one test) replays the
 * counterexample fast-check printed for it. The long run is `npm run model-check` (scripts/model-check.ts).
 */
import fc from 'fast-check';
import { adapters } from '../support/app';
import { envValue } from '../support/database-urls';
import { engines } from '../support/databases';
import { AbortHarness } from '../support/unit-of-work-http';
import { RunnerHarness } from '../support/unit-of-work-harness';
import { abortProgramArbitrary, pairArbitrary, programArbitrary } from '../support/unit-of-work-model';

const SEED = Number(process.env.TEST_SEED ?? '') || Date.now() % 2 ** 31;
const RUNS = Number(process.env.MODEL_RUNS ?? '') || 300;
const PAIR_RUNS = Math.max(4, Math.round(RUNS / 10));
const ABORT_RUNS = Math.max(4, Math.round(RUNS / 15));
const PATH = process.env.MODEL_PATH || undefined;
const parameters = (numRuns: number): fc.Parameters<unknown> => ({
  seed: SEED,
  numRuns,
  path: PATH,
  endOnFailure: PATH !== undefined,
});

process.stdout.write(
  `model-based test: seed ${SEED}, ${RUNS} programs per database (replay: TEST_SEED=${SEED} MODEL_RUNS=${RUNS})\n`,
);

/** Fails with the report of the first divergent program, shrunk, and the seed to replay it. */
function failOn(report: string | undefined): void {
  if (report !== undefined) throw new Error(report);
}

describe.each(engines)('the model-based test on $name', (engine) => {
  // In the PgBouncer run the app goes through PgBouncer; the observer and deadlock partners to the server.
  const database = {
    dialect: engine.name,
    url: engine.url,
    directUrl: engine.name === 'postgres' ? envValue('DATABASE_DIRECT_URL') : undefined,
  };
  let harness: RunnerHarness;

  beforeAll(async () => {
    harness = await RunnerHarness.start(database);
  });

  afterAll(async () => {
    await harness?.close();
  });

  it('reports for every random unit of work what the database did, as the model says', async () => {
    await fc.assert(
      fc.asyncProperty(programArbitrary({ dialect: engine.name }), async (program) => failOn(await harness.check(program))),
      parameters(RUNS),
    );
  }, 600_000);

  it('when two units of work deadlock: exactly one is the victim, and each reports what the database did', async () => {
    await fc.assert(
      fc.asyncProperty(pairArbitrary(engine.name), async (pair) => failOn(await harness.checkPair(pair))),
      parameters(PAIR_RUNS),
    );
  }, 600_000);

  describe.each(adapters)('over %s', (adapter) => {
    let http: AbortHarness;

    beforeAll(async () => {
      http = await AbortHarness.start(database, adapter);
    });

    afterAll(async () => {
      await http?.close();
    });

    it('when the client disconnects mid-handler: rolls back on the spot, writes nothing, runs the afterRollback hooks', async () => {
      await fc.assert(
        fc.asyncProperty(abortProgramArbitrary({ dialect: engine.name }), async (program) => failOn(await http.check(program))),
        parameters(ABORT_RUNS),
      );
    }, 600_000);
  });
});
