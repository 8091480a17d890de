// ESLint for the library, its tests, the sample app, the bench, the scripts and the compatibility
// smoke apps. Type-aware (typescript-eslint's recommendedTypeChecked): an un-awaited promise is the bug
// class a transaction library exists to catch, so no-floating-promises and no-misused-promises are on,
// and return-await keeps a returned promise inside try/catch/finally awaited (otherwise the catch
// never sees its rejection and the finally runs before it settles). Layout is Prettier's: no style rules.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores([
    '**/node_modules/',
    '**/dist/',
    'bench/results/',
    'coverage/',
    '.embedded-pg/',
    'scripts/.node/',
    // Compiled by compat/resolution.sh against the packed package, under each moduleResolution.
    'compat/resolution/consumer.ts',
  ]),
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      // `??`, not `||`, for defaults: 0 and false are real values. An empty string is not: an empty
      // environment variable or message means none, and `||` says so.
      '@typescript-eslint/prefer-nullish-coalescing': ['error', { ignorePrimitives: { string: true } }],
      // A `let` read by a closure (a signal handler) before its one assignment cannot be a const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // A leading underscore names a parameter or binding kept for its position (a signature to match,
      // a tuple slot): unused by design.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // A switch with a default branch handles every case; the check is for switches without one.
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      // Rethrowing or rejecting with what was caught (an `unknown`) is the deliberate pattern: the
      // library passes the database's error through unchanged.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // An async function without await is how a method keeps a Promise-returning signature (an
      // interface, a fake, a hook) and turns a synchronous throw into a rejection.
      '@typescript-eslint/require-await': 'off',
      // Nest's public API speaks `Function`: ExecutionContext.getHandler()/getClass(), Reflector
      // targets, decorator targets. Matching it avoids a cast at every call.
      '@typescript-eslint/no-unsafe-function-type': 'off',
    },
  },
  {
    // HTTP answers, query rows and messages from the wire are `any` in the clients' types (fetch's
    // json(), DataSource.query(), supertest): the tests assert their contents, the bench and the scripts
    // count them. The library and the sample app's source keep these rules.
    files: ['test/**/*.ts', 'sample-app/test/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      // Tests hand methods over by reference on purpose: to Nest and Reflect for their metadata
      // (`Controller.prototype.handle`), to then() as a Deferred's resolve.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    extends: [js.configs.recommended],
    languageOptions: { globals: globals.node },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
);
