import type { Config } from 'jest';

const config: Config = {
  rootDir: '.',
  testEnvironment: 'node',
  testMatch: [
    '<rootDir>/test/unit/**/*.spec.ts',
    '<rootDir>/test/e2e/**/*.e2e-spec.ts',
    '<rootDir>/sample-app/test/**/*.e2e-spec.ts',
  ],
  moduleFileExtensions: ['ts', 'js', 'json'],
  transform: {
    // Transpile only (isolatedModules): `npm run typecheck` checks the types, so the suite starts fast.
    '^.+\\.ts$': ['ts-jest', { tsconfig: { isolatedModules: true } }],
  },
  // The sample app imports the package by name; in this repo that is the source in lib/.
  moduleNameMapper: {
    '^nestjs-request-transaction$': '<rootDir>/lib/index.ts',
    '^nestjs-request-transaction/testing$': '<rootDir>/lib/testing/index.ts',
    '^nestjs-request-transaction/prometheus$': '<rootDir>/lib/prometheus/index.ts',
  },
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  // For ordinary tests. The long ones (thousands of requests, hundreds queued on a pool of one, outages)
  // set their own, generous timeouts: on a machine whose cores are busy they take many times longer,
  // and no test asserts speed. The waits inside tests (test/support/wait-for.ts) stay below this one.
  testTimeout: 30_000,
  // The suites share their tables (test/support/entities.ts) and count the connections of their database:
  // one suite at a time, also when Jest is run without --runInBand.
  maxWorkers: 1,
  // Once in a few full runs a MariaDB connection of the suites stayed open after the last test (idle,
  // not found yet), and Jest waited for it forever: a finished run must end, so CI cannot hang on it.
  // Each test still checks that its app leaked nothing (test/support/leaks.ts).
  forceExit: true,
};

export default config;
