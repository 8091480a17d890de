import { dirname, sep } from 'node:path';

// lib/ in development, dist/ once built: everything below it is the library's own frames.
const LIBRARY_ROOT = dirname(__dirname) + sep;
const NODE_MODULES = `${sep}node_modules${sep}`;
// Deep enough to reach the application through TypeORM's persistence layers.
const STACK_DEPTH = 20;

/** A captured stack; its frames are read (and formatted) only when a message needs them. */
export interface StackHolder {
  stack?: string;
  /** The application frame, once found; null when there is none. */
  site?: string | null;
}

/** Captures the current stack cheaply: V8 keeps the frames and formats nothing until asked. */
export function captureStack(): StackHolder {
  const holder: StackHolder = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = STACK_DEPTH;
  Error.captureStackTrace(holder, captureStack);
  Error.stackTraceLimit = limit;
  return holder;
}

function isApplicationFrame(frame: NodeJS.CallSite): boolean {
  const file = frame.getFileName();
  return (
    file !== undefined &&
    file !== null &&
    !file.startsWith('node:') &&
    !file.includes(NODE_MODULES) &&
    !file.startsWith(LIBRARY_ROOT)
  );
}

/**
 * The first frame that belongs to the application (not the library, not `node_modules`, not Node's
 * internals), as `Class.method (file.ts:42:7)`; undefined if there is none. Frames are chosen by
 * their real file, then formatted the way the process formats stacks (source maps included).
 */
export function callSite(holder: StackHolder | undefined): string | undefined {
  if (holder === undefined) return undefined;
  if (holder.site === undefined) {
    // Saved and put back below: a static hook of V8's, not a method that needs its object.
    // eslint-disable-next-line @typescript-eslint/unbound-method
    const previous = Error.prepareStackTrace;
    holder.site = null;
    Error.prepareStackTrace = (error, frames) => {
      const index = frames.findIndex(isApplicationFrame);
      if (index === -1) return '';
      const formatted = previous ? String(previous(error, frames)).split('\n')[index + 1] : undefined;
      // V8's CallSite formats itself as a stack line (its toString() is missing from the types).
      // eslint-disable-next-line @typescript-eslint/no-base-to-string
      holder.site = (formatted ?? String(frames[index])).trim().replace(/^at (async )?/, '');
      return '';
    };
    try {
      void holder.stack;
    } finally {
      Error.prepareStackTrace = previous;
    }
  }
  return holder.site ?? undefined;
}

/** ` (at Class.method (file.ts:42:7))` for messages, or nothing when no application frame was found. */
export function atCallSite(holder: StackHolder | undefined): string {
  const site = callSite(holder);
  return site ? ` (at ${site})` : '';
}
