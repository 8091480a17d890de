/**
 * Random programs for units of work, a reference model of what the database and the library must make
 * of them, and a printer that shows a program as the code it stands for. No database and no Jest in
 * here: `test/e2e/model-based.e2e-spec.ts` and `scripts/model-check.ts` run the programs through the
 * library (`test/support/unit-of-work-harness.ts`) and compare what happened with {@link model}.
 *
 * A program is the `fn` of one `TransactionRunner.run(fn)`: a block of steps, each a statement (an
 * insert of a row of its own, or one that fails), a hook, a savepoint (`tx.transaction()` or
 * `run(…, { propagation: 'nested' })`), a joined `run()`, concurrent savepoints and inserts, or a
 * deadlock with another transaction. Every step has a number `#n`: an inserted row has id `n`, a hook
 * is labelled `commit#n` / `rollback#n`, a block that throws throws `ProgramError(n)` and one that
 * returns returns `'value#n'`.
 *
 * The semantics the model encodes (both databases unless said):
 * - A statement in a transaction the database aborted fails at once. PostgreSQL aborts the innermost
 *   open level on any failed statement: the unit of work when outside a savepoint, else that savepoint
 *   (until it is rolled back). MariaDB undoes an ordinary failed statement (duplicate key) alone, and
 *   rolls the whole transaction back on a deadlock; PostgreSQL treats a deadlock like any failure.
 * - A savepoint whose callback throws is rolled back: its rows, its nested savepoints' rows and the hooks
 *   registered inside it are dropped, and the call rejects with the callback's error. One whose
 *   callback returns is kept (rows and hooks join the enclosing level), unless a statement failed in it
 *   on PostgreSQL: then it is rolled back and the call rejects all the same. A savepoint opened in an
 *   aborted level fails at once, and nothing of its callback counts.
 * - Concurrent savepoints and statements of one level run one after another, in call order; each
 *   savepoint gets exactly its own semantics. A joined `run()` is a plain call in the level it is made
 *   from (the innermost open savepoint of its caller): nothing is undone when it throws.
 * - The unit of work commits when `fn` resolves and the transaction was not aborted: `run()` resolves
 *   with `fn`'s value and the afterCommit hooks run. Otherwise it rolls back: `run()` rejects (with
 *   `fn`'s own error when `fn` threw it), the afterRollback hooks run, nothing of it is in the database.
 *   Hooks run in registration order. `stats()` counts one commit or one rollback for a unit of work that
 *   ran a statement (a SAVEPOINT is one), nothing for one that did not.
 */
import fc from 'fast-check';

export type Dialect = 'postgres' | 'mariadb';

/** How a row is inserted: `tx.insert()`, `tx.getRepository().save()` (a SELECT, then the INSERT), raw SQL. */
export type InsertApi = 'insert' | 'save' | 'query';
/** A statement that fails: a duplicate of the committed row 0 (`tx.insert()` or raw SQL), or `SELECT 1/0` (PostgreSQL). */
export type FailureKind = 'duplicate' | 'duplicate-sql' | 'division';
/** How a savepoint is opened. */
export type SavepointVia = 'transaction' | 'nested-run';

/** Inserts row `n`. */
export interface InsertStep {
  kind: 'insert';
  n: number;
  api: InsertApi;
  /** `.catch(() => undefined)`: it fails where the transaction is aborted. Never in a concurrent branch. */
  caught: boolean;
}
/** A statement that fails. */
export interface FailStep {
  kind: 'fail';
  n: number;
  failure: FailureKind;
  /** `.catch(() => undefined)` on the call, else its error propagates. */
  caught: boolean;
}
/** `TransactionHost.afterCommit()` / `afterRollback()` with a hook that records `commit#n` / `rollback#n`. */
export interface HookStep {
  kind: 'hook';
  n: number;
  on: 'commit' | 'rollback';
}
/** `tx.transaction(body)` or `runner.run(body, { propagation: 'nested' })`. */
export interface SavepointStep {
  kind: 'savepoint';
  n: number;
  via: SavepointVia;
  caught: boolean;
  body: Block;
}
/** `runner.run(body)` inside the unit of work: it joins it. */
export interface JoinStep {
  kind: 'join';
  n: number;
  caught: boolean;
  body: Block;
}
/** Branches called at once, in order; then `Promise.all` (first error in call order) or `Promise.allSettled`. */
export interface ConcurrentStep {
  kind: 'concurrent';
  n: number;
  settle: 'all' | 'allSettled';
  caught: boolean;
  branches: Array<InsertStep | SavepointStep>;
}
/**
 * Locks row `2n - 1`, then another transaction (the harness's raw connection) locks row `2n` and waits
 * for `2n - 1`; then this unit asks for `2n`, and the database picks this unit as the deadlock victim.
 */
export interface DeadlockStep {
  kind: 'deadlock';
  n: number;
  caught: boolean;
}
/**
 * The two-unit deadlock: lock one of two shared rows, wait until the other unit of work locked the
 * other, then ask for it. One of the two units is the database's victim.
 */
export interface CrossStep {
  kind: 'cross';
  n: number;
  /** Which of the two shared rows this unit locks first. */
  first: 0 | 1;
  caught: boolean;
}
/** One step of a block. */
export type Step = InsertStep | FailStep | HookStep | SavepointStep | JoinStep | ConcurrentStep | DeadlockStep | CrossStep;

/** A callback's body: its steps, then a return or a throw. */
export interface Block {
  n: number;
  steps: Step[];
  /** Ends with `throw new ProgramError(n)` instead of `return 'value#n'`. */
  throws: boolean;
}

/** The error a program's block throws. */
export class ProgramError extends Error {
  constructor(readonly n: number) {
    super(`the program threw at #${n}`);
  }
}

/** One unit of work's program, printed as code by fast-check and in divergence reports. */
export class Program {
  constructor(
    readonly dialect: Dialect,
    readonly body: Block,
    /**
     * For the client-abort property: the client disconnects before root step `abortAt` runs (after the
     * last one when equal to their count). The steps before never let an error out.
     */
    readonly abortAt?: number,
  ) {}

  /** Steps in the program, nested ones included. */
  get size(): number {
    return countSteps(this.body);
  }

  [fc.toStringMethod](): string {
    return printProgram(this);
  }

  toString(): string {
    return printProgram(this);
  }
}

/** Two programs run as concurrent units of work, each with one {@link CrossStep}. */
export class ProgramPair {
  constructor(
    readonly a: Program,
    readonly b: Program,
  ) {}

  [fc.toStringMethod](): string {
    return this.toString();
  }

  toString(): string {
    return `await Promise.allSettled([\n${indent(printProgram(this.a))},\n${indent(printProgram(this.b))},\n]);`;
  }
}

function countSteps(block: Block): number {
  let count = 0;
  for (const step of block.steps) {
    count += 1;
    if (step.kind === 'savepoint' || step.kind === 'join') count += countSteps(step.body);
    if (step.kind === 'concurrent') {
      for (const branch of step.branches) count += 1 + (branch.kind === 'savepoint' ? countSteps(branch.body) : 0);
    }
  }
  return count;
}

// ---------------------------------------------------------------------------------------------
// Generators

/** What {@link programArbitrary} generates. */
export interface GeneratorOptions {
  dialect: Dialect;
  /** Savepoint / join nesting below the unit of work. Default 3. */
  maxDepth?: number;
  /** Steps of the unit's own block at most. Default 8 (nested blocks: 4). */
  maxSteps?: number;
  /** Include {@link DeadlockStep}s (rare). Default true. */
  deadlocks?: boolean;
  /** Only steps that never let an error out (everything caught, no throw at the end of a root block). */
  quiet?: boolean;
  /**
   * Savepoints through `tx.transaction()` only, no joined or nested `run()`: for steps after a client
   * disconnected, where `run()` deliberately starts a fresh unit of work of its own (work that outlives
   * its unit of work), which the model leaves out.
   */
  managerOnly?: boolean;
}

type Draft<T> = T extends { n: number } ? Omit<T, 'n' | 'body' | 'branches'> & DraftChildren<T> : never;
type DraftChildren<T> = T extends { body: Block }
  ? { body: DraftBlock }
  : T extends { branches: Array<infer B> }
    ? { branches: Array<Draft<B>> }
    : unknown;
interface DraftBlock {
  steps: Array<Draft<Step>>;
  throws: boolean;
}

const weighted = <T>(pairs: Array<[number, fc.Arbitrary<T>]>): fc.Arbitrary<T> =>
  fc.oneof(...pairs.map(([weight, arbitrary]) => ({ weight, arbitrary })));
/** True with `probability`; shrinks to false. */
const chance = (probability: number): fc.Arbitrary<boolean> =>
  fc.integer({ min: 1, max: 100 }).map((roll) => roll > 100 - probability * 100);

function failures(dialect: Dialect): FailureKind[] {
  return dialect === 'postgres' ? ['division', 'duplicate', 'duplicate-sql'] : ['duplicate', 'duplicate-sql'];
}

/** Drafts of blocks at each depth, built once per options. */
function draftArbitraries(options: GeneratorOptions): { root: fc.Arbitrary<DraftBlock> } {
  const maxDepth = options.maxDepth ?? 3;
  const quiet = options.quiet === true;
  const insertWith = (caught: fc.Arbitrary<boolean>) =>
    fc.record({ kind: fc.constant('insert' as const), api: fc.constantFrom<InsertApi>('insert', 'save', 'query'), caught });
  const branchInsert = insertWith(fc.constant(false));
  const hook = fc.record({
    kind: fc.constant('hook' as const),
    on: fc.constantFrom<'commit' | 'rollback'>('commit', 'rollback'),
  });
  const caughtAt = (root: boolean) => (quiet && root ? fc.constant(true) : chance(0.6));
  const blocks = new Map<number, fc.Arbitrary<DraftBlock>>();

  const stepAt = (depth: number): fc.Arbitrary<Draft<Step>> => {
    const root = depth === 0;
    const fail = fc.record({
      kind: fc.constant('fail' as const),
      failure: fc.constantFrom(...failures(options.dialect)),
      caught: caughtAt(root),
    });
    const choices: Array<[number, fc.Arbitrary<Draft<Step>>]> = [
      [8, insertWith(quiet && root ? fc.constant(true) : chance(0.2))],
      [4, fail],
      [3, hook],
    ];
    if (depth < maxDepth) {
      const inner = blockAt(depth + 1);
      const via =
        options.managerOnly === true
          ? fc.constant<SavepointVia>('transaction')
          : fc.constantFrom<SavepointVia>('transaction', 'nested-run');
      choices.push([4, fc.record({ kind: fc.constant('savepoint' as const), via, caught: caughtAt(root), body: inner })]);
      if (options.managerOnly !== true) {
        choices.push([1, fc.record({ kind: fc.constant('join' as const), caught: caughtAt(root), body: inner })]);
      }
      const branch = weighted<Draft<InsertStep | SavepointStep>>([
        [1, branchInsert],
        [3, fc.record({ kind: fc.constant('savepoint' as const), via, caught: fc.constant(false), body: inner })],
      ]);
      choices.push([
        2,
        fc.record({
          kind: fc.constant('concurrent' as const),
          settle: fc.constantFrom<'all' | 'allSettled'>('all', 'allSettled'),
          caught: caughtAt(root),
          branches: fc.array(branch, { minLength: 2, maxLength: 3 }),
        }),
      ]);
    }
    if (options.deadlocks !== false) {
      choices.push([1, fc.record({ kind: fc.constant('deadlock' as const), caught: caughtAt(root) })]);
    }
    return weighted(choices);
  };

  function blockAt(depth: number): fc.Arbitrary<DraftBlock> {
    let block = blocks.get(depth);
    if (block === undefined) {
      const root = depth === 0;
      const maxLength = root ? (options.maxSteps ?? 8) : 4;
      block = fc.record({
        steps: fc.array(stepAt(depth), { maxLength }),
        throws: root && quiet ? fc.constant(false) : chance(root ? 0.15 : 0.3),
      });
      blocks.set(depth, block);
    }
    return block;
  }

  return { root: blockAt(0) };
}

/** Numbers a drafted block's steps in pre-order, starting at `next.value`. */
function numberBlock(draft: DraftBlock, next: { value: number }): Block {
  const n = next.value++;
  const steps = draft.steps.map((step) => numberStep(step, next));
  return { n, steps, throws: draft.throws };
}

function numberStep(draft: Draft<Step>, next: { value: number }): Step {
  const n = next.value++;
  switch (draft.kind) {
    case 'savepoint':
    case 'join':
      return { ...draft, n, body: numberBlock(draft.body, next) };
    case 'concurrent':
      return { ...draft, n, branches: draft.branches.map((branch) => numberStep(branch as Draft<Step>, next)) } as ConcurrentStep;
    default:
      return { ...draft, n };
  }
}

/** Random programs for one unit of work on `dialect`. */
export function programArbitrary(options: GeneratorOptions): fc.Arbitrary<Program> {
  return draftArbitraries(options).root.map((draft) => new Program(options.dialect, numberBlock(draft, { value: 1 })));
}

/**
 * Random programs for the client-abort property: a handler whose first `abortAt` root steps never let
 * an error out (the client disconnects there), followed by anything.
 */
export function abortProgramArbitrary(options: GeneratorOptions): fc.Arbitrary<Program> {
  const before = draftArbitraries({ ...options, quiet: true, deadlocks: false }).root;
  const after = draftArbitraries({ ...options, deadlocks: false, maxSteps: 3, managerOnly: true }).root;
  return fc.tuple(before, after).map(([head, tail]) => {
    const draft: DraftBlock = { steps: [...head.steps, ...tail.steps], throws: tail.throws };
    return new Program(options.dialect, numberBlock(draft, { value: 1 }), head.steps.length);
  });
}

/**
 * Random pairs for the two-unit deadlock property: each unit writes and registers hooks, then locks one
 * of two shared rows and asks for the other (maybe inside savepoints or joined runs, caught or not),
 * then goes on. The two lock them in opposite order.
 */
export function pairArbitrary(dialect: Dialect): fc.Arbitrary<ProgramPair> {
  const simple = weighted<Draft<Step>>([
    [
      3,
      fc.record({
        kind: fc.constant('insert' as const),
        api: fc.constantFrom<InsertApi>('insert', 'save', 'query'),
        caught: fc.boolean(),
      }),
    ],
    [2, fc.record({ kind: fc.constant('hook' as const), on: fc.constantFrom<'commit' | 'rollback'>('commit', 'rollback') })],
  ]);
  const wrapper = fc.record({
    kind: fc.constantFrom<'savepoint-transaction' | 'savepoint-nested-run' | 'join'>(
      'savepoint-transaction',
      'savepoint-nested-run',
      'join',
    ),
    caught: fc.boolean(),
    before: fc.array(simple, { maxLength: 2 }),
    after: fc.array(simple, { maxLength: 2 }),
    throws: chance(0.2),
  });
  const unit = fc.record({
    before: fc.array(simple, { maxLength: 3 }),
    wrappers: fc.array(wrapper, { maxLength: 2 }),
    caught: fc.boolean(),
    after: fc.array(simple, { maxLength: 3 }),
    throws: chance(0.15),
  });
  return fc.tuple(unit, unit).map(([a, b]) => {
    const next = { value: 1 };
    const build = (draft: UnitDraft, first: 0 | 1): Program => {
      let inner: DraftBlock = { steps: [{ kind: 'cross', first, caught: draft.caught }], throws: false };
      for (const w of [...draft.wrappers].reverse()) {
        const steps = [...w.before, wrapStep(w, inner), ...w.after];
        inner = { steps, throws: w.throws };
      }
      const root: DraftBlock = { steps: [...draft.before, ...inner.steps, ...draft.after], throws: draft.throws };
      return new Program(dialect, numberBlock(root, next));
    };
    return new ProgramPair(build(a, 0), build(b, 1));
  });
}

interface UnitDraft {
  before: Array<Draft<Step>>;
  wrappers: Array<{
    kind: 'savepoint-transaction' | 'savepoint-nested-run' | 'join';
    caught: boolean;
    before: Array<Draft<Step>>;
    after: Array<Draft<Step>>;
    throws: boolean;
  }>;
  caught: boolean;
  after: Array<Draft<Step>>;
  throws: boolean;
}

function wrapStep(w: UnitDraft['wrappers'][number], body: DraftBlock): Draft<Step> {
  if (w.kind === 'join') return { kind: 'join', caught: w.caught, body };
  return { kind: 'savepoint', via: w.kind === 'savepoint-transaction' ? 'transaction' : 'nested-run', caught: w.caught, body };
}

// ---------------------------------------------------------------------------------------------
// The reference model

/**
 * What one step's call did: resolved, or rejected. `either` (the model only): an insert started
 * together with savepoints of its level waits while one is open, and may reach the connection
 * before, between or after them; when they abort the whole transaction, it may be the first or the
 * second.
 */
export type StepOutcome = 'ok' | 'failed' | 'either';

/** What a unit of work must come to, or what it came to. */
export interface UnitOutcome {
  /** `run()`: resolves with a value, or rejects (with `ProgramError(error)` when the model knows which). */
  run: { resolves: string } | { rejects: number | undefined };
  /** The state the unit of work reports once settled (`TransactionHost.current().state`). */
  status: 'committed' | 'rolledBack';
  /** Labels of the hooks that ran, in order. */
  hooks: string[];
  /** Commits and rollbacks `stats()` counted on the data source. */
  stats: { commits: number; rollbacks: number };
  /** Ids of the unit's rows in the database afterwards. */
  rows: number[];
  /** Each step's own call, by step number, where it ran. */
  steps: Map<number, StepOutcome>;
}

interface Scope {
  root: boolean;
  writes: number[];
  hooks: string[];
  /** PostgreSQL: a statement failed in this savepoint; it is aborted until rolled back. */
  failed: boolean;
}

interface UnitState {
  dialect: Dialect;
  /** The database aborted the whole transaction. */
  aborted: boolean;
  /** A statement reached the connection (so BEGIN did too). */
  touched: boolean;
  steps: Map<number, StepOutcome>;
  /** For {@link CrossStep}: whether the database picks this unit as the deadlock victim. */
  victim: boolean;
}

/** A block's or call's result: a value, or an error (`user`: the `ProgramError` it is, when known). */
type Result = { ok: true; value?: string } | { ok: false; user?: number };

const OK: Result = { ok: true };
const DB_ERROR: Result = { ok: false };

/** Options of {@link model}. */
export interface ModelOptions {
  /** The unit is the victim of its {@link CrossStep}'s deadlock. */
  victim?: boolean;
}

/** What the unit of work of `program` must come to. */
export function model(program: Program, options: ModelOptions = {}): UnitOutcome {
  const unit: UnitState = {
    dialect: program.dialect,
    aborted: false,
    touched: false,
    steps: new Map(),
    victim: options.victim === true,
  };
  const root: Scope = { root: true, writes: [], hooks: [], failed: false };
  const result = runBlock(program.body, root, unit);
  const commit = result.ok && !unit.aborted;
  return {
    run: commit ? { resolves: result.value as string } : { rejects: !result.ok && !unit.aborted ? result.user : undefined },
    status: commit ? 'committed' : 'rolledBack',
    hooks: root.hooks.filter((label) => label.startsWith(commit ? 'commit#' : 'rollback#')),
    stats: unit.touched ? { commits: commit ? 1 : 0, rollbacks: commit ? 0 : 1 } : { commits: 0, rollbacks: 0 },
    rows: commit ? [...root.writes].sort((x, y) => x - y) : [],
    steps: unit.steps,
  };
}

/**
 * What the unit of work of `program` must come to when its client disconnects before root step
 * `program.abortAt`: rolled back on the spot, whatever it did, with the afterRollback hooks registered
 * until then (savepoints that returned included).
 */
export function abortModel(program: Program): Omit<UnitOutcome, 'run'> {
  const unit: UnitState = { dialect: program.dialect, aborted: false, touched: false, steps: new Map(), victim: false };
  const root: Scope = { root: true, writes: [], hooks: [], failed: false };
  const head: Block = { n: program.body.n, steps: program.body.steps.slice(0, program.abortAt), throws: false };
  const result = runBlock(head, root, unit);
  if (!result.ok) throw new Error(`the steps before the abort of ${printProgram(program)} let an error out`);
  return {
    status: 'rolledBack',
    hooks: root.hooks.filter((label) => label.startsWith('rollback#')),
    stats: unit.touched ? { commits: 0, rollbacks: 1 } : { commits: 0, rollbacks: 0 },
    rows: [],
    steps: unit.steps,
  };
}

function runBlock(block: Block, scope: Scope, unit: UnitState): Result {
  for (const step of block.steps) {
    const result = runStep(step, scope, unit);
    if (!result.ok) return result;
  }
  return block.throws ? { ok: false, user: block.n } : { ok: true, value: `value#${block.n}` };
}

function runStep(step: Step, scope: Scope, unit: UnitState): Result {
  const own = (result: Result): Result => {
    unit.steps.set(step.n, result.ok ? 'ok' : 'failed');
    return result;
  };
  const caught = (flag: boolean, result: Result): Result => (flag ? OK : result);
  switch (step.kind) {
    case 'insert':
      return caught(step.caught, own(insert(step, scope, unit)));
    case 'fail':
      return caught(step.caught, own(statementFails(scope, unit, 'failure')));
    case 'hook':
      scope.hooks.push(`${step.on}#${step.n}`);
      return own(OK);
    case 'savepoint':
      return caught(step.caught, own(savepoint(step, scope, unit)));
    case 'join':
      return caught(step.caught, own(runBlock(step.body, scope, unit)));
    case 'concurrent': {
      // The savepoints take the connection one after another, in call order. An insert of this level
      // never runs inside one of them (it waits while one is open), but it may run before, between or
      // after them: modelled after them, with its own outcome open where they aborted the transaction.
      const usableBefore = usable(scope, unit);
      const results = new Map<number, Result>();
      let open = false;
      for (const branch of step.branches) {
        if (branch.kind !== 'savepoint') continue;
        const result = savepoint(branch, scope, unit);
        unit.steps.set(branch.n, result.ok ? 'ok' : 'failed');
        results.set(branch.n, result);
      }
      for (const branch of step.branches) {
        if (branch.kind !== 'insert') continue;
        const result = insert(branch, scope, unit);
        const either = !result.ok && usableBefore;
        open ||= either;
        unit.steps.set(branch.n, either ? 'either' : result.ok ? 'ok' : 'failed');
        results.set(branch.n, either ? OK : result);
      }
      const firstFailure = step.branches.map((branch) => results.get(branch.n) as Result).find((result) => !result.ok);
      const group = step.settle === 'allSettled' || firstFailure === undefined ? OK : firstFailure;
      const outcome = caught(step.caught, own(group));
      // Whether an open insert failed decides whether Promise.all rejects: say so, whatever was assumed.
      if (open && step.settle === 'all' && firstFailure === undefined) unit.steps.set(step.n, 'either');
      return outcome;
    }
    case 'deadlock':
      // The first lock is a statement like any other; the second one is the deadlock.
      return caught(step.caught, own(usable(scope, unit) ? statementFails(scope, unit, 'deadlock') : touch(unit, DB_ERROR)));
    case 'cross':
      if (!usable(scope, unit)) return caught(step.caught, own(touch(unit, DB_ERROR)));
      return caught(step.caught, own(unit.victim ? statementFails(scope, unit, 'deadlock') : touch(unit, OK)));
  }
}

function touch(unit: UnitState, result: Result): Result {
  unit.touched = true;
  return result;
}

function usable(scope: Scope, unit: UnitState): boolean {
  return !unit.aborted && !scope.failed;
}

function insert(step: InsertStep, scope: Scope, unit: UnitState): Result {
  if (!usable(scope, unit)) return touch(unit, DB_ERROR);
  scope.writes.push(step.n);
  return touch(unit, OK);
}

/** A statement that fails in `scope`, and what its failure aborts. */
function statementFails(scope: Scope, unit: UnitState, why: 'failure' | 'deadlock'): Result {
  if (usable(scope, unit)) {
    if (why === 'deadlock' && unit.dialect === 'mariadb') unit.aborted = true;
    else if (unit.dialect === 'postgres') {
      if (scope.root) unit.aborted = true;
      else scope.failed = true;
    }
  }
  return touch(unit, DB_ERROR);
}

function savepoint(step: SavepointStep, scope: Scope, unit: UnitState): Result {
  // SAVEPOINT is a statement: in an aborted level it fails at once, and nothing of the callback counts.
  if (!usable(scope, unit)) return touch(unit, DB_ERROR);
  touch(unit, OK);
  const inner: Scope = { root: false, writes: [], hooks: [], failed: false };
  const result = runBlock(step.body, inner, unit);
  // The whole transaction is gone (a MariaDB deadlock): so is the savepoint; which error surfaces is open.
  if (unit.aborted) return DB_ERROR;
  if (!result.ok) return result;
  if (inner.failed) return DB_ERROR;
  scope.writes.push(...inner.writes);
  scope.hooks.push(...inner.hooks);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Printing

/** The program as the code it stands for. */
export function printProgram(program: Program): string {
  const lines: string[] = [];
  lines.push(
    program.abortAt === undefined
      ? `runner.run(async (tx) => { // ${program.dialect}`
      : `@Post() async handler(@Tx() tx: EntityManager) { // ${program.dialect}; the client disconnects where marked`,
  );
  printBlock(program.body, 1, lines, program.abortAt);
  lines.push(program.abortAt === undefined ? '})' : '}');
  return lines.join('\n');
}

function printBlock(block: Block, depth: number, lines: string[], abortAt?: number): void {
  const pad = '  '.repeat(depth);
  block.steps.forEach((step, index) => {
    if (index === abortAt) lines.push(`${pad}// <- the client disconnects here`);
    printStep(step, depth, lines, true);
  });
  if (block.steps.length === abortAt) lines.push(`${pad}// <- the client disconnects here`);
  lines.push(`${pad}${block.throws ? `throw new ProgramError(${block.n});` : `return 'value#${block.n}';`}`);
}

const catchSuffix = (caught: boolean) => (caught ? '.catch(() => undefined)' : '');

/** The call of a step that is one call, as code. */
function oneLineCall(step: Step): string | undefined {
  switch (step.kind) {
    case 'insert':
      return step.api === 'insert'
        ? `tx.insert(Row, { id: ${step.n} })`
        : step.api === 'save'
          ? `tx.getRepository(Row).save({ id: ${step.n} })`
          : `tx.query('INSERT INTO model_rows (id) VALUES (${step.n})')`;
    case 'fail':
      return step.failure === 'division'
        ? `tx.query('SELECT 1/0')`
        : step.failure === 'duplicate'
          ? `tx.insert(Row, { id: 0 }) /* duplicate key */`
          : `tx.query('INSERT INTO model_rows (id) VALUES (0)') /* duplicate key */`;
    case 'deadlock':
      return `deadlock(tx, ${step.n}) /* locks row ${2 * step.n - 1}; a partner locks ${2 * step.n} and waits for ${2 * step.n - 1}; asks for ${2 * step.n}: the victim */`;
    case 'cross':
      return `cross(tx) /* locks shared row ${step.first}, waits for the other unit to lock ${1 - step.first}, asks for it */`;
    default:
      return undefined;
  }
}

function printStep(step: Step, depth: number, lines: string[], awaited: boolean): void {
  const pad = '  '.repeat(depth);
  const tag = `// #${step.n}`;
  const simple = oneLineCall(step);
  const prefix = awaited ? 'await ' : '';
  const suffix = awaited ? ';' : ',';
  if (simple !== undefined) {
    const caught = 'caught' in step && awaited ? catchSuffix(step.caught) : '';
    lines.push(`${pad}${prefix}${simple}${caught}${suffix} ${tag}`);
    return;
  }
  switch (step.kind) {
    case 'hook':
      lines.push(
        `${pad}host.${step.on === 'commit' ? 'afterCommit' : 'afterRollback'}(() => ran('${step.on}#${step.n}'))${awaited ? ';' : ','} ${tag}`,
      );
      return;
    case 'savepoint':
    case 'join': {
      const opener =
        step.kind === 'join'
          ? 'runner.run(async (tx) => {'
          : step.via === 'transaction'
            ? 'tx.transaction(async (tx) => {'
            : 'runner.run(async (tx) => {';
      lines.push(`${pad}${prefix}${opener} ${tag}${step.kind === 'join' ? ' (joined)' : ''}`);
      printBlock(step.body, depth + 1, lines);
      const close = step.kind === 'savepoint' && step.via === 'nested-run' ? "}, { propagation: 'nested' })" : '})';
      lines.push(`${pad}${close}${awaited ? catchSuffix(step.caught) : ''}${suffix}`);
      return;
    }
    case 'concurrent': {
      const note = step.settle === 'all' ? ' (rejects once every branch settled)' : '';
      lines.push(`${pad}await Promise.${step.settle}([ ${tag}${note}`);
      for (const branch of step.branches) printStep(branch, depth + 1, lines, false);
      lines.push(`${pad}])${step.settle === 'all' ? catchSuffix(step.caught) : ''};`);
      return;
    }
    default:
      // The one-line steps were printed through oneLineCall() above.
      throw new Error(`printStep: '${step.kind}' is a one-line step, which oneLineCall() prints`);
  }
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

/** A unit outcome on one line per aspect, for reports. */
export function describeOutcome(outcome: Partial<UnitOutcome>): string[] {
  const lines: string[] = [];
  if (outcome.run !== undefined) {
    lines.push(
      'resolves' in outcome.run
        ? `run() resolves with '${outcome.run.resolves}'`
        : `run() rejects${outcome.run.rejects === undefined ? '' : ` with ProgramError(${outcome.run.rejects})`}`,
    );
  }
  if (outcome.status !== undefined) lines.push(`status ${outcome.status}`);
  if (outcome.hooks !== undefined) lines.push(`hooks ran: [${outcome.hooks.join(', ')}]`);
  if (outcome.stats != null) lines.push(`stats: commits +${outcome.stats.commits}, rollbacks +${outcome.stats.rollbacks}`);
  if (outcome.rows !== undefined) lines.push(`rows in the database: [${outcome.rows.join(', ')}]`);
  return lines;
}
