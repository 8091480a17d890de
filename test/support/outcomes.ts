/** Outcomes of work raced against a deadline, as values a test can compare. */
import { DEFAULT_WAIT_MS } from './wait-for';

/** `promise`, or a failure naming `what` if it has not settled within `ms` (instead of Jest's silent test timeout). */
export async function within<T>(promise: Promise<T>, what: string, ms = DEFAULT_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** An outcome as a short name for `toEqual` diffs: the error's class, or `resolved`. */
export function outcomeName(outcome: unknown): string {
  if (outcome instanceof Error) return outcome.constructor.name;
  return typeof outcome === 'object' && outcome !== null && 'resolved' in outcome ? 'resolved' : String(outcome);
}

/** The error `work` failed with, or `{ resolved: value }`. */
export async function outcomeOf(work: () => Promise<unknown>): Promise<unknown> {
  try {
    return { resolved: await work() };
  } catch (error) {
    return error;
  }
}
