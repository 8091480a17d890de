/**
 * A level of a unit of work's connection: its own transaction, or one of its savepoints opened by
 * `tx.transaction()`. Levels nest; an ended level hands its statements to the level around it.
 */
export interface Level {
  readonly parent?: Level;
  ended: boolean;
}

/** The innermost level of `level` that is still open. */
export function openLevel(level: Level): Level {
  let open = level;
  while (open.ended && open.parent !== undefined) open = open.parent;
  return open;
}

interface Waiter {
  level: Level;
  resolve: () => void;
}

/**
 * Who may use a unit of work's connection next. One statement at a time, and only a statement of the
 * innermost open level: a savepoint's statements can never interleave with a sibling savepoint's or
 * with the enclosing level's, so ROLLBACK TO SAVEPOINT undoes exactly that savepoint's work. Also,
 * a statement is handed to the driver only once the previous one was answered, so none can slip in
 * after a failure that ended the transaction (MySQL/MariaDB then run it in autocommit).
 * Waiters go in call order.
 */
export class ConnectionTurns {
  readonly root: Level = { ended: false };
  /** The innermost open level: only its statements run. */
  private active: Level = this.root;
  private busy = false;
  private waiting?: Waiter[];
  /** The unit of work settled: nobody waits any more. */
  private settled = false;

  /** Takes the connection for `level` if it is free for it now: true if it did (then call `give()`). */
  tryTake(level: Level): boolean {
    if (this.busy || openLevel(level) !== this.active) return false;
    this.busy = true;
    return true;
  }

  /** Resolves once the connection is `level`'s; then call `give()`. */
  take(level: Level): Promise<void> {
    if (this.tryTake(level) || this.settled) return Promise.resolve();
    return new Promise((resolve) => (this.waiting ??= []).push({ level, resolve }));
  }

  /** Hands the connection on. */
  give(): void {
    this.busy = false;
    const waiting = this.waiting;
    if (waiting === undefined) return;
    const next = waiting.findIndex((waiter) => openLevel(waiter.level) === this.active);
    if (next === -1) return;
    const [waiter] = waiting.splice(next, 1);
    if (waiting.length === 0) this.waiting = undefined;
    this.busy = true;
    waiter.resolve();
  }

  /** While holding the connection: from now on `level` (a savepoint just opened or just ended) runs. */
  enter(level: Level): void {
    this.active = level;
  }

  /** The unit of work settled: every waiter goes on, to find it settled. */
  giveAll(): void {
    this.settled = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting !== undefined) for (const waiter of waiting) waiter.resolve();
  }
}
