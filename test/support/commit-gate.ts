/** A way to hold the app's next COMMIT from the test, to look at the database while it waits. */
import { EventSubscriber, type EntitySubscriberInterface } from 'typeorm';
import { latch } from './latch';

/**
 * Holds the next COMMIT the app sends, once armed: TypeORM awaits `beforeTransactionCommit` of every
 * subscriber before it sends COMMIT. Module-level because TypeORM, not Nest, creates subscribers.
 */
export const commitGate = { armed: false, reached: latch(), release: latch() };

/** The subscriber behind {@link commitGate}: list it in the data source's `subscribers`. */
@EventSubscriber()
export class CommitGate implements EntitySubscriberInterface {
  async beforeTransactionCommit(): Promise<void> {
    if (!commitGate.armed) return;
    commitGate.armed = false;
    commitGate.reached.resolve();
    await commitGate.release.promise;
  }
}

/** Arms {@link commitGate} for the next COMMIT (releasing one still held). */
export function armCommitGate(): void {
  commitGate.release.resolve();
  Object.assign(commitGate, { armed: true, reached: latch(), release: latch() });
}
