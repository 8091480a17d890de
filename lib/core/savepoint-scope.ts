import type { Level } from './connection-turns';

/** Hooks registered in one scope of a unit of work: the unit itself, or one of its savepoints. */
export interface HookScope {
  commit: Array<() => unknown>;
  rollback: Array<() => unknown>;
}

/** Moves the hooks of a savepoint that was kept into the scope around it. */
export function mergeHooks(into: HookScope, from: HookScope | undefined): void {
  if (from === undefined) return;
  into.commit.push(...from.commit);
  into.rollback.push(...from.rollback);
}

/**
 * A savepoint opened by `tx.transaction()` (or `run(fn, { propagation: 'nested' })`), while its
 * callback runs: the async context of that callback, the level of the connection its statements
 * belong to, and the hooks registered in it.
 */
export class SavepointScope<Ctx = unknown, Source = unknown> implements Level {
  closed = false;
  /** Hooks registered inside it: kept with it, dropped when it rolls back. */
  hooks?: HookScope;

  constructor(
    readonly ctx: Ctx,
    /** The data source transaction whose connection holds the savepoint. */
    readonly source: Source,
    /** The savepoint whose callback opened this one, on any data source of the unit of work. */
    readonly enclosing: SavepointScope<Ctx, Source> | undefined,
    /** The level of the same connection around it. */
    readonly parent: Level,
    /** TypeORM's transaction depth before it: its name is `typeorm_${depth}`. */
    readonly depth: number,
  ) {}

  /** The innermost open savepoint of this callback's chain on `source`, if any. */
  on(source: Source): SavepointScope<Ctx, Source> | undefined {
    for (let scope: SavepointScope<Ctx, Source> | undefined = this; scope !== undefined; scope = scope.enclosing) {
      if (scope.source === source && !scope.closed) return scope;
    }
    return undefined;
  }

  /** The innermost open savepoint of this callback's chain, on any data source. */
  innermostOpen(): SavepointScope<Ctx, Source> | undefined {
    for (let scope: SavepointScope<Ctx, Source> | undefined = this; scope !== undefined; scope = scope.enclosing) {
      if (!scope.closed) return scope;
    }
    return undefined;
  }
}
