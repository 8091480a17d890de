import { createServer } from 'node:net';
import { bootstrap } from '../src/bootstrap';
import { DatabaseUnreachableError } from '../src/database';

/** A port nothing listens on: one the system just gave out and took back. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('bootstrap() on a database that does not answer', () => {
  it.each(['postgres', 'mysql'])(
    'rejects once, with a DatabaseUnreachableError naming the URL without its password (%s)',
    async (scheme) => {
      const port = await closedPort();
      const logged = jest.spyOn(process.stderr, 'write');

      const started = bootstrap({ databaseUrl: `${scheme}://app:secret@127.0.0.1:${port}/wallet`, logger: ['error'] });

      const error = await started.then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(DatabaseUnreachableError);
      expect((error as Error).message).toBe(
        `the database at ${scheme}://app:***@127.0.0.1:${port}/wallet did not accept a connection (connect ECONNREFUSED 127.0.0.1:${port})`,
      );
      // Nest logged nothing of it: no "Retrying (1)…", no stack from its exception handler.
      expect(logged).not.toHaveBeenCalled();
      logged.mockRestore();
    },
  );
});
