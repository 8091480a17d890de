// Every entry point loads through require() in a CommonJS app (see compat/resolution.sh).
'use strict';
require('reflect-metadata');
const expected = require('./expected.json');
let failed = 0;
for (const [specifier, names] of Object.entries(expected)) {
  const loaded = require(specifier);
  const missing = names.filter((name) => typeof loaded[name] !== 'function');
  console.log(
    `${missing.length === 0 ? 'PASS' : 'FAIL'} require('${specifier}')${missing.length ? `: missing ${missing.join(', ')}` : ''}`,
  );
  if (missing.length) failed = 1;
}
process.exit(failed);
