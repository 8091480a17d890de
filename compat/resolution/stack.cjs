// Run with --enable-source-maps: the frames of an error thrown inside the package map to its
// TypeScript sources, and those files are in the package (see compat/resolution.sh).
'use strict';
const { existsSync } = require('node:fs');
const { singleConnectionPool } = require('nestjs-request-transaction/testing');

let error;
try {
  singleConnectionPool({ type: 'better-sqlite3', database: ':memory:' });
} catch (caught) {
  error = caught;
}
const frames = String(error && error.stack)
  .split('\n')
  .map((line) => /\(?([^\s()]*node_modules\/nestjs-request-transaction\/[^:()]+):\d+:\d+\)?$/.exec(line))
  .filter(Boolean)
  .map((match) => match[1]);
const bad = frames.filter((file) => !file.endsWith('.ts') || !existsSync(file));
console.log(frames.length > 0 && bad.length === 0 ? `frames in the package: ${frames.join(', ')}` : String(error && error.stack));
process.exit(frames.length > 0 && bad.length === 0 ? 0 : 1);
