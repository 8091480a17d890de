import type { Level } from './connection-turns';
import type { HookScope } from './hook-scopes';
import { unitOfWorkStorage } from './unit-of-work-storage';

/**
 * The level of `source`'s connection the caller's statements belong to: the innermost open savepoint
 * of the caller's chain on it, or `root` (its transaction) outside one.
 */
export function levelOfCaller(source: object, root: Level): Level {
  const store = unitOfWorkStorage.getStore();
  return store instanceof SavepointScope ? (store.on(source) ?? root) : root;
}

/**
 * A savepoint opened by `tx.transaction()` (or `run(fn, { propagation: 'nested' })`), while its
 * callback runs: the async context of that callback, the level of the connection its statements
 * belong to, and the hooks registered in it.
 */
export class SavepointScope<Unit = unknown, Source = unknown> implements Level {
  ended = false;
  /** Hooks registered inside it: kept with it, dropped when it rolls back. */
  hooks?: HookScope;

  constructor(
    readonly unitOfWork: Unit,
    /** The data source transaction whose connection holds the savepoint. */
    readonly source: Source,
    /** The savepoint whose callback opened this one, on any data source of the unit of work. */
    readonly enclosing: SavepointScope<Unit, Source> | undefined,
    /** The level of the same connection around it. */
    readonly parent: Level,
    /** TypeORM's transaction depth before it: its name is `typeorm_${depth}`. */
    readonly depth: number,
  ) {}

  /** The innermost open savepoint of this callback's chain on `source`, if any. */
  on(source: Source): SavepointScope<Unit, Source> | undefined {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- walks the chain that starts here
    for (let scope: SavepointScope<Unit, Source> | undefined = this; scope !== undefined; scope = scope.enclosing) {
      if (scope.source === source && !scope.ended) return scope;
    }
    return undefined;
  }

  /** The innermost open savepoint of this callback's chain, on any data source. */
  innermostOpen(): SavepointScope<Unit, Source> | undefined {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- walks the chain that starts here
    for (let scope: SavepointScope<Unit, Source> | undefined = this; scope !== undefined; scope = scope.enclosing) {
      if (!scope.ended) return scope;
    }
    return undefined;
  }
}
