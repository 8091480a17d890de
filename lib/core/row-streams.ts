import { finished, type Readable } from 'node:stream';

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
