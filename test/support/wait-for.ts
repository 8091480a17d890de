/**
 * How long a test waits for a state before it fails, by default: far longer than any state takes to
 * arrive on an idle machine (milliseconds), so that a busy one (every core taken by other work) does
 * not fail a test that behaves. Only a failing test waits this long. Jest's per-test timeout (30 s)
 * stays above it, so the failure that shows is the test's own, with its diff.
 */
export const DEFAULT_WAIT_MS = 15_000;

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this long. Default: {@link DEFAULT_WAIT_MS}. */
  timeoutMs?: number;
  /** Pause between attempts. Default: 20. */
  intervalMs?: number;
}

/**
 * Polls `probe` until it returns anything but `false` without throwing, and resolves with that
 * value; rejects at the deadline with the last failure (so an `expect` inside shows its diff).
 * For states the test cannot await directly, e.g. a connection going back to idle after the
 * response was sent.
 *
 * @example
 * await waitFor(async () => (await db.backends(app)).length === 0);
 * await waitFor(async () => expect(await db.idleInTransactionCount(app)).toBe(0), { timeoutMs: 2000 });
 */
export async function waitFor<T>(
  probe: () => T | Promise<T>,
  { timeoutMs = DEFAULT_WAIT_MS, intervalMs = 20 }: WaitForOptions = {},
): Promise<Exclude<T, false>> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  // What the last attempt that finished before the deadline did; none if none finished.
  let last: { threw: false } | { threw: true; error: unknown } | undefined;
  for (;;) {
    attempts += 1;
    try {
      const value = await beforeDeadline(probe, deadline);
      if (value !== false) return value as Exclude<T, false>;
      last = { threw: false };
    } catch (error) {
      if (error instanceof DeadlineError) break;
      last = { threw: true, error };
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, remaining)));
  }
  const why =
    last === undefined
      ? 'no attempt finished in time'
      : last.threw
        ? `the last attempt threw: ${last.error instanceof Error ? last.error.message : String(last.error)}`
        : 'the last attempt returned false';
  throw new Error(`waitFor gave up after ${timeoutMs} ms and ${attempts} attempt(s): ${why}`, {
    cause: last?.threw ? last.error : undefined,
  });
}

class DeadlineError extends Error {}

/** Runs one attempt, but stops waiting for it at the deadline (a probe query may block). */
async function beforeDeadline<T>(probe: () => T | Promise<T>, deadline: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const attempt = Promise.resolve().then(probe);
  // An attempt abandoned at the deadline may still fail later; nobody is listening then.
  attempt.catch(() => undefined);
  try {
    return await Promise.race([
      attempt,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DeadlineError()), Math.max(0, deadline - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
