// Seeded randomness for the tests and the soak script: every random choice comes from a stream
// derived from one seed, so a failure can be replayed with the same choices. No Jest in here: the
// global setup and scripts/soak.ts import it.

/** A random source: a float in [0, 1), like `Math.random`, plus the helpers the tests need. */
export interface Random {
  /** A float in [0, 1). */
  (): number;
  /** A whole number in [min, max] (both ends included). */
  int(min: number, max: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
}

/**
 * mulberry32: a 32-bit state generator, small and fast, with full period over its state. Plenty for
 * choosing delays and abort points; not for anything cryptographic.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of `text`: turns a stream's label into 32 bits to mix into the seed. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The environment variable that fixes the seed: `TEST_SEED=123456 npm test`. */
export const SEED_VARIABLE = 'TEST_SEED';

/**
 * The seed of this run: `TEST_SEED` when set (a whole number from 0 to 2^32 - 1), else one drawn
 * now and stored in `process.env.TEST_SEED`, so that everything later in this process (and the
 * processes it starts) uses the same one. The Jest global setup calls this first and prints it.
 */
export function runSeed(): number {
  const given = process.env[SEED_VARIABLE];
  if (given !== undefined && given !== '') {
    const seed = Number(given);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new Error(
        `${SEED_VARIABLE}=${given} is not a seed: random tests could not replay a run with it. ` +
          `Set ${SEED_VARIABLE} to a whole number from 0 to 4294967295 (as printed by a run), or unset it.`,
      );
    }
    return seed;
  }
  // The one place a seed is drawn unseeded.
  const seed = Math.floor(Math.random() * 0x100000000);
  process.env[SEED_VARIABLE] = String(seed);
  return seed;
}

/**
 * A random stream for `label`, derived from the run's seed: the same seed and label give the same
 * numbers, whatever else ran before. Use one label per independent stream (a test file, a request),
 * so that concurrency does not change which numbers a given choice gets.
 *
 * @example
 * const random = seededRandom(`transfer ${index}`);
 * const cut = random.chance(0.7);
 */
export function seededRandom(label: string, seed: number = runSeed()): Random {
  const next = mulberry32(seed ^ hash32(label));
  const random = (() => next()) as Random;
  random.int = (min, max) => min + Math.floor(next() * (max - min + 1));
  random.chance = (p) => next() < p;
  return random;
}

/** The line a run prints so that its random choices can be replayed. */
export function seedLine(seed: number = runSeed()): string {
  return `Random choices use ${SEED_VARIABLE}=${seed}; replay them with ${SEED_VARIABLE}=${seed} in the environment.`;
}
