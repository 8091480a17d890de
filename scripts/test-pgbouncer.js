// `npm run test:pgbouncer`: the PostgreSQL end-to-end suites again, through PgBouncer in transaction
// pooling (jest.pgbouncer.config.ts). Without a pgbouncer binary the run is skipped, loudly, unless CI
// is set: CI must run it (.ci/run installs PgBouncer).
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const onPath = (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(join(dir, 'pgbouncer')));
if (!onPath && !existsSync('/usr/sbin/pgbouncer')) {
  const message = 'pgbouncer is not installed (apt-get install -y pgbouncer)';
  if (process.env.CI !== undefined) {
    console.error(`${message}: CI must run the PgBouncer suites.`);
    process.exit(1);
  }
  console.warn(`!!! ${message}: THE PGBOUNCER RUN IS SKIPPED.`);
  process.exit(0);
}
const jest = require.resolve('jest/bin/jest');
const result = spawnSync(process.execPath, [jest, '-c', 'jest.pgbouncer.config.ts', '--runInBand', ...process.argv.slice(2)], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
