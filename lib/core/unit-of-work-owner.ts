import type { UnitOfWork } from './unit-of-work';

/** What a unit of work runs for: a request, or one `TransactionRunner.run()`. */
export interface UnitOfWorkOwner {
  /** `POST /transfers`, or the runner's name: computed only when a message needs it. */
  describe(): string;
  /** Runs the work (one attempt of it) with `unitOfWork` as the current unit of work. */
  attempt(unitOfWork: UnitOfWork): unknown;
  /** False once running the work again is no longer safe (a response already went out). */
  canRetry?(): boolean;
  /**
   * Where units of work of this kind (one route) took their connection, by data source: capturing a
   * stack costs tens of microseconds, so a route captures it on its first request, and later requests
   * name that site. Without it, every unit of work captures its own.
   */
  readonly sites?: Map<string, string | null>;
  /**
   * Called once, before the unit of work first holds something it would have to roll back (a data
   * source's transaction, a hook). A request starts watching for its client's disconnect here; it
   * may settle `unitOfWork` on the spot, and the caller then fails with the finished error.
   */
  engaged?(unitOfWork: UnitOfWork): void;
}
