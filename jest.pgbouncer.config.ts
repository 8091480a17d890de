import type { Config } from 'jest';
import base from './jest.config';

/**
 * The PgBouncer run: the PostgreSQL side of every end-to-end suite (the sample app's included) again,
 * with every data source connecting through PgBouncer in transaction-pooling mode, where consecutive
 * transactions of one client connection may run on different server connections and no session state
 * survives a transaction. See `test/support/pgbouncer-global-setup.ts`.
 *
 *   npx jest -c jest.pgbouncer.config.ts --runInBand
 */
const config: Config = {
  ...base,
  testMatch: ['<rootDir>/test/e2e/**/*.e2e-spec.ts', '<rootDir>/sample-app/test/**/*.e2e-spec.ts'],
  testPathIgnorePatterns: [
    '/node_modules/',
    // It stops and starts a PostgreSQL server of its own, with no PgBouncer in front.
    '<rootDir>/test/e2e/faults-postgres-restart\\.e2e-spec\\.ts$',
    // It starts PgBouncers of its own, in front of the server itself.
    '<rootDir>/test/e2e/faults-pgbouncer\\.e2e-spec\\.ts$',
  ],
  globalSetup: '<rootDir>/test/support/pgbouncer-global-setup.ts',
  globalTeardown: '<rootDir>/test/support/pgbouncer-global-teardown.ts',
};

export default config;
