// Every entry point loads through import in an ESM app (see compat/resolution.sh).
import 'reflect-metadata';
import { readFileSync } from 'node:fs';

const expected = JSON.parse(readFileSync(new URL('./expected.json', import.meta.url), 'utf8'));
let failed = 0;
for (const [specifier, names] of Object.entries(expected)) {
  const loaded = await import(specifier);
  const missing = names.filter((name) => typeof loaded[name] !== 'function');
  console.log(
    `${missing.length === 0 ? 'PASS' : 'FAIL'} import '${specifier}'${missing.length ? `: missing ${missing.join(', ')}` : ''}`,
  );
  if (missing.length) failed = 1;
}
process.exit(failed);
