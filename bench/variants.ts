/**
 * The bench's variants: the same app written by hand, with this module, with each peer library, and
 * without Nest or TypeORM at all. Plain data (no Nest, no TypeORM imports): the runner, the server
 * entry point and the report all read it.
 */

/** Measured by default, in this order (the first is the baseline of every ratio). */
export const DEFAULT_VARIANTS = [
  'handwritten',
  'module-off',
  'module-throw',
  'module-throw-route-off',
  'typeorm-transactional',
  'nestjs-cls-transactional',
  'raw-pg',
] as const;

/**
 * Opt-in diagnostics (`--variants=...`), each isolating one ingredient of a variant's cost:
 * - `hand-interceptor`: `handwritten` plus a global no-op interceptor (Nest's interceptor pipeline);
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
  'hand-interceptor',
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
  'hand-interceptor-als': 'hand-written + interceptor + ALS',
  'hand-als': 'hand-written + ALS (middleware)',
  'hand-als-handler': 'hand-written + ALS (in the handler)',
  'typeorm-transactional-cls-hooked': 'typeorm-transactional (cls-hooked)',
  'nestjs-cls-no-middleware': '@nestjs-cls/transactional, no CLS middleware',
};

export function isNestVariant(variant: Variant): boolean {
  return variant !== 'raw-pg';
}
