/**
 * Promises the test settles from outside: a latch a handler or hook waits on, or a signal it gives.
 */

/** A promise with its resolve and reject functions outside; they work detached (`once('close', l.resolve)`). */
export interface Latch<T = void> {
  readonly promise: Promise<T>;
  /** True once resolve() or reject() was called. */
  readonly settled: boolean;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** A fresh {@link Latch}. */
export function latch<T = void>(): Latch<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const handle = {
    promise,
    settled: false,
    resolve(value: T) {
      handle.settled = true;
      resolve(value);
    },
    reject(error: unknown) {
      handle.settled = true;
      reject(error);
    },
  };
  return handle;
}

/** Resolves `arrive()` for everyone once `parties` callers have arrived. */
export function barrier(parties: number): { arrive(): Promise<void> } {
  const all = latch();
  let arrived = 0;
  return {
    arrive() {
      arrived += 1;
      if (arrived === parties) all.resolve();
      return all.promise;
    },
  };
}

/** Lets other work run first: whatever was waiting to run concurrently gets its turn before this resolves. */
export function yieldToOthers(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}
