/**
 * The bench's variants: the same app written by hand, with this module, with each peer library, and
 * without Nest or TypeORM at all. Plain data (no Nest, no TypeORM imports): the runner, the server
 * entry point and the report all read it.
 */
import type { Workload } from './workloads';

/**
 * Measured by default, in this order (the first is the baseline of every ratio):
 * - `hand-interceptor`: `handwritten` plus a global no-op interceptor: Nest's interceptor pipeline, which
 *   any interceptor pays; the module's first target is measured against it;
 * - `hand-realistic`, `module-realistic`: `handwritten` and `module-throw` in an app as most apps run:
 *   a global `ValidationPipe` (a class-validator DTO on the write route), `ClassSerializerInterceptor`
 *   and an auth guard (a header check); on the database routes only;
 * - `module-per-controller`: the module with `forRoot({ mount: false })` and
 *   `@UseInterceptors(TransactionInterceptor)` on the database controller only: the route without a
 *   database runs no interceptor at all. On that route only;
 * - `gql-handwritten`, `gql-module`, `gql-nestjs-cls`: a GraphQL server (Apollo on Express, Mercurius on
 *   Fastify, graphql.ts) with a QueryRunner per operation by hand, with this module, and with
 *   @nestjs-cls/transactional. On the GraphQL workloads only, which no other variant serves.
 */
export const DEFAULT_VARIANTS = [
  'handwritten',
  'hand-interceptor',
  'module-throw',
  'module-throw-route-off',
  'typeorm-transactional',
  'nestjs-cls-transactional',
  'raw-pg',
  'hand-realistic',
  'module-realistic',
  'module-per-controller',
  'gql-handwritten',
  'gql-module',
  'gql-nestjs-cls',
  'module-idle-off',
] as const;

/**
 * Opt-in diagnostics (`--variants=...`), each isolating one ingredient of a variant's cost:
 * - `module-off`: the module with `guard: 'off'` in a process of its own (the guard's cost across two
 *   processes; the default run measures it in one, with `module-throw-route-off`);
 * - `hand-interceptor-als`: that interceptor also runs the handler inside `AsyncLocalStorage.run()`;
 * - `hand-als`: `handwritten` with the request run inside `AsyncLocalStorage.run()` by a middleware, no
 *   interceptor (on Node 20, promise hooks for every promise, plus the middleware layer);
 * - `hand-als-handler`: `handwritten` with each handler's work inside `AsyncLocalStorage.run()` and
 *   nothing else: what propagating a context costs by itself, the floor of every library that needs one;
 * - `typeorm-transactional-cls-hooked`: typeorm-transactional on its legacy default storage driver
 *   (`cls-hooked`, what `initializeTransactionalContext()` with no options still selects in 0.5);
 * - `nestjs-cls-no-middleware`: @nestjs-cls/transactional without the CLS middleware, so `@Transactional()`
 *   opens the CLS context itself and routes without it pay nothing.
 */
export const DIAGNOSTIC_VARIANTS = [
  'module-off',
  'hand-interceptor-als',
  'hand-als',
  'hand-als-handler',
  'typeorm-transactional-cls-hooked',
  'nestjs-cls-no-middleware',
] as const;

export const ALL_VARIANTS = [...DEFAULT_VARIANTS, ...DIAGNOSTIC_VARIANTS] as const;
export type Variant = (typeof ALL_VARIANTS)[number];

export const ADAPTERS = ['express', 'fastify'] as const;
export type AdapterName = (typeof ADAPTERS)[number];

/** The peers every other variant is compared with, beside the baseline. */
export const BASELINE: Variant = 'handwritten';
export const PEERS = ['typeorm-transactional', 'nestjs-cls-transactional'] as const satisfies readonly Variant[];
/** No Nest, no TypeORM: the ceiling. One process for the whole run, shown in every adapter's table. */
export const CEILING: Variant = 'raw-pg';

/**
 * A variant served by another variant's process, on routes of its own: `module-throw-route-off` is
 * `@Transactional({ guard: 'off' })` routes of the `module-throw` server, which measures the guard's
 * own cost without comparing two processes (whose JIT and core placement differ by a few per cent).
 */
export const SAME_PROCESS: Partial<Record<Variant, { host: Variant; routeSuffix: string }>> = {
  'module-throw-route-off': { host: 'module-throw', routeSuffix: '-guard-off' },
};

/**
 * Variants measured on some workloads only (every other variant runs every workload): what they are
 * for is on those routes, and leaving out the rest keeps the default run short.
 */
export const ONLY_ON: Partial<Record<Variant, readonly Workload[]>> = {
  'module-throw-route-off': ['transfer', 'read', 'mix'],
  'hand-realistic': ['transfer', 'read'],
  'module-realistic': ['transfer', 'read'],
  'module-per-controller': ['nodb'],
  'module-idle-off': ['transfer'],
  'gql-handwritten': ['gql-write', 'gql-read'],
  'gql-module': ['gql-write', 'gql-read'],
  'gql-nestjs-cls': ['gql-write', 'gql-read'],
};

/** The GraphQL variants: the baseline of their ratios, the module, the peer. */
export const GQL_BASELINE: Variant = 'gql-handwritten';
export const GQL_MODULE: Variant = 'gql-module';
export const GQL_PEER: Variant = 'gql-nestjs-cls';

/** The variant a workload's ratios are relative to: the GraphQL workloads have their own hand-written baseline. */
export function baselineOf(workload: Workload): Variant {
  return workload.startsWith('gql-') ? GQL_BASELINE : BASELINE;
}

/** Whether a variant is measured on a workload: a variant not in ONLY_ON runs every HTTP workload. */
export function runsOn(variant: Variant, workload: Workload): boolean {
  return ONLY_ON[variant]?.includes(workload) ?? !workload.startsWith('gql-');
}

/**
 * The `forRoot()` options of `module-idle-off` (BENCH_IDLE_OFF_OPTIONS, JSON, overrides them): the
 * idle-in-transaction report off, as it is by default in production. What stays is the accounting every
 * unit of work does (a clock read when its first statement begins, when its last one ends, and at its
 * end); the report adds a stack capture per statement, in development and tests.
 */
export const IDLE_ACCOUNTING_OFF: Record<string, unknown> | undefined = { idleInTransactionMs: false };

/**
 * The targets the summary checks, each a req/s ratio (median of the per-round ratios) that must reach
 * `atLeast` on every adapter and on each of `workloads`.
 */
export interface PerformanceTarget {
  subject: Variant;
  reference: Variant;
  atLeast: number;
  workloads: readonly Workload[];
  what: string;
}

export const TARGETS: readonly PerformanceTarget[] = [
  {
    subject: 'module-throw',
    reference: 'hand-interceptor',
    atLeast: 0.97,
    workloads: ['transfer', 'read', 'nodb', 'mix'],
    what: 'the module against hand-written code behind a no-op global interceptor',
  },
  {
    subject: 'module-throw',
    reference: 'nestjs-cls-transactional',
    atLeast: 1.0,
    workloads: ['transfer', 'read', 'nodb', 'mix'],
    what: 'the module against @nestjs-cls/transactional',
  },
  {
    subject: 'module-realistic',
    reference: 'hand-realistic',
    atLeast: 0.95,
    workloads: ['transfer', 'read'],
    what: 'in a realistic app (ValidationPipe, ClassSerializerInterceptor, auth guard), the module against hand-written code',
  },
];

/** Short labels for tables and the chart. */
export const LABELS: Record<Variant, string> = {
  handwritten: 'hand-written',
  'module-off': "module, guard 'off'",
  'module-throw': "module, guard 'throw'",
  'module-throw-route-off': "module 'throw' server, route guard 'off'",
  'typeorm-transactional': 'typeorm-transactional',
  'nestjs-cls-transactional': '@nestjs-cls/transactional',
  'raw-pg': 'raw pg (no Nest, no TypeORM)',
  'hand-interceptor': 'hand-written + no-op interceptor',
  'hand-realistic': 'realistic app, hand-written',
  'module-realistic': 'realistic app, module',
  'module-per-controller': 'module, mount: false, per controller',
  'module-idle-off': "module 'throw', idle report off",
  'hand-interceptor-als': 'hand-written + interceptor + ALS',
  'hand-als': 'hand-written + ALS (middleware)',
  'hand-als-handler': 'hand-written + ALS (in the handler)',
  'typeorm-transactional-cls-hooked': 'typeorm-transactional (cls-hooked)',
  'nestjs-cls-no-middleware': '@nestjs-cls/transactional, no CLS middleware',
  'gql-handwritten': 'GraphQL, hand-written QueryRunner per operation',
  'gql-module': "GraphQL, module, guard 'throw'",
  'gql-nestjs-cls': 'GraphQL, @nestjs-cls/transactional',
};

export function isNestVariant(variant: Variant): boolean {
  return variant !== 'raw-pg';
}
