import { finished, type Readable } from 'node:stream';
import { OpenStreamError } from '../errors';
import { atCallSite, captureStack } from './call-site';

/** Whether `value` (what the runner's `stream()` resolved with) is a stream to track. */
export function isStream(value: unknown): value is Readable {
  return typeof (value as Readable | undefined)?.on === 'function';
}

/**
 * The streams of rows read through one connection (TypeORM's `queryRunner.stream()`): the connection
 * is busy with a stream until the stream is read to its end, or closed by its reader.
 */
export class RowStreams {
  private readonly streams = new Set<Readable>();

  /** Tracks `stream` until it ends or closes; `onError` gets the error it was destroyed with, if any. */
  add(stream: Readable, onError: (error: Error) => void): void {
    this.streams.add(stream);
    finished(stream, () => {
      this.streams.delete(stream);
      // Not finished()'s own error: a reader's destroy() without one is a premature close, not a failure.
      if (stream.errored) onError(stream.errored);
    });
  }

  /**
   * Whether a stream is still open. One its reader destroyed (a `break` or an error out of
   * `for await`, `destroy()`) is closing: both drivers send the next statement once it closed
   * (pg-query-stream closes its cursor; mysql2 reads and drops the rest of the rows).
   */
  get open(): boolean {
    for (const stream of this.streams) if (!stream.destroyed) return true;
    return false;
  }

  /**
   * Destroys every open stream with `error` and resolves once they all closed: pg-query-stream
   * closes its cursor on the connection first, and never reports a close once the connection is
   * gone, so the connection may be closed only after this.
   */
  destroyAll(error: Error): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const stream of this.streams) {
      if (stream.destroyed) continue;
      closing.push(new Promise((resolve) => finished(stream, () => resolve())));
      stream.destroy(error);
    }
    return Promise.all(closing).then(() => undefined);
  }
}

/** The error for `use` (a statement, or the COMMIT/ROLLBACK) of `label`'s transaction while a stream of rows is open. */
export function openStreamError(label: string, use: string): OpenStreamError {
  const ending = use === 'COMMIT' || use === 'ROLLBACK';
  return new OpenStreamError(
    `${use} in the transaction of ${label}${ending ? '' : ' was refused'}${atCallSite(captureStack())}: a stream ` +
      `of rows read through its connection is still open, and the connection is busy until the stream is read ` +
      `to its end. ` +
      (ending
        ? `A stream returned as the response (StreamableFile, a piped Readable) would be read only after the unit of ` +
          `work ended, so it cannot come from its transaction: the unit of work was rolled back and its connection ` +
          `closed. `
        : `A query made while iterating over the stream's rows would wait for the stream forever (the rows wait ` +
          `for the query). `) +
      `Read the rows to their end inside the unit of work before anything else (for await … of stream), collect ` +
      `them first, or stream from a @NoTransaction() route with a QueryRunner of its own.`,
  );
}
