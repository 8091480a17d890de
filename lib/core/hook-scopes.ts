import { Logger } from '@nestjs/common';

const logger = new Logger('TransactionalModule');

/** A hook: `afterCommit(hook)` or `afterRollback(hook)`. */
export type Hook = () => unknown;

/** Hooks registered in one scope of a unit of work: the unit itself, or one of its savepoints. */
export interface HookScope {
  commit: Hook[];
  rollback: Hook[];
}

/** An empty scope. */
export function newHookScope(): HookScope {
  return { commit: [], rollback: [] };
}

/** Moves the hooks of a savepoint that was kept into the scope around it. */
export function mergeHooks(into: HookScope, from: HookScope | undefined): void {
  if (from === undefined) return;
  into.commit.push(...from.commit);
  into.rollback.push(...from.rollback);
}

/**
 * Runs the hooks of a settled unit of work in registration order. A failing hook is logged and the
 * next one runs: a committed request stays committed, a hook failure is no error response.
 */
export async function runHooks(hooks: Hook[], outcome: 'committed' | 'rolledBack', label: string): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook();
    } catch (error) {
      logger.error(
        `An ${outcome === 'committed' ? 'afterCommit' : 'afterRollback'} hook of ${label} failed: ${String(error)}`,
        error instanceof Error ? error.stack : undefined,
      );
    }
  }
}
