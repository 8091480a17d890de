/**
 * Where a server's counted instructions went, by function: reads a callgrind profile that
 * `BENCH_IC_PROFILE=dir bash bench/instructions.sh` kept, names the JIT-compiled JavaScript in it
 * from V8's perf map (`--perf-basic-prof`; callgrind itself only knows the node binary's symbols), and
 * prints the functions that cost most per request, then the share of each group of code: this
 * library's own functions, TypeORM, pg, Nest, the HTTP server, V8 and node's runtime.
 *
 *   node bench/dist/symbolize.js <callgrind.out> <perf.map> <requests counted> [top = 40]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

interface MapEntry {
  start: number;
  end: number;
  name: string;
}

const [profile, perfMap, requestsArg, topArg] = process.argv.slice(2);
if (!profile || !perfMap || !(Number(requestsArg) > 0)) {
  console.error('usage: node bench/dist/symbolize.js <callgrind.out> <perf.map> <requests counted> [top]');
  process.exit(1);
}
const requests = Number(requestsArg);
const top = Number(topArg ?? 40);

const entries: MapEntry[] = [];
for (const line of readFileSync(perfMap, 'utf8').split('\n')) {
  const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
  if (match) {
    const start = parseInt(match[1], 16);
    entries.push({ start, end: start + parseInt(match[2], 16), name: match[3] });
  }
}
// Stable: of two entries at one address (code freed and the space reused), the later one wins.
entries.sort((a, b) => a.start - b.start);

function jsName(address: number): string {
  let lo = 0;
  let hi = entries.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid].start <= address) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  for (let i = found; i >= 0 && i > found - 64; i--) {
    if (address < entries[i].end) return entries[i].name;
  }
  return 'JS (unnamed)';
}

// callgrind_annotate: one line per function, "  1,234 (0.05%)  file:function [object]".
const annotated = execFileSync('callgrind_annotate', ['--threshold=100', profile], { maxBuffer: 1 << 30 }).toString();
const byFunction = new Map<string, number>();
let total = 0;
for (const line of annotated.split('\n')) {
  const match = /^\s*([\d,]+) \([\s\d.]+%\)\s+(.*?)\s*$/.exec(line);
  if (!match || line.includes('PROGRAM TOTALS')) continue;
  const ir = Number(match[1].replace(/,/g, ''));
  const jit = /^\?\?\?:0x([0-9a-f]+) \[\?\?\?\]$/.exec(match[2]);
  const name = jit
    ? jsName(parseInt(jit[1], 16))
    : match[2]
        .replace(/^\?\?\?:/, '')
        .replace(/ \[[^\]]*\]$/, '')
        .replace(/'\d+$/, '');
  byFunction.set(name, (byFunction.get(name) ?? 0) + ir);
  total += ir;
}

const GROUPS: Array<[string, RegExp]> = [
  [
    'this library (dist/)',
    /^(?!.*node_modules).*\/dist\/(core|http|guard|repository|decorators|locking|testing|transactional\.|errors)/,
  ],
  ['TypeORM', /node_modules\/typeorm\//],
  ['pg', /node_modules\/pg(-[a-z]+)?\//],
  ['Nest', /node_modules\/@nestjs\//],
  [
    'Express / Fastify and their helpers',
    /node_modules\/(express|fastify|find-my-way|avvio|light-my-request|body-parser|router|@fastify|fast-)/,
  ],
  ['rxjs', /node_modules\/rxjs\//],
  ['the bench app', /\/bench\/dist\//],
  ["node's own JavaScript (node:…)", /^JS:.* node:/],
  ['other JavaScript', /^JS:|\.js:\d+/],
];
const byGroup = new Map<string, number>();
for (const [name, ir] of byFunction) {
  const group = GROUPS.find(([, pattern]) => pattern.test(name))?.[0] ?? 'V8, node and libc (native code, builtins, GC, JIT)';
  byGroup.set(group, (byGroup.get(group) ?? 0) + ir);
}

const perRequest = (ir: number) => Math.round(ir / requests).toLocaleString('en-US');
const share = (ir: number) => `${((100 * ir) / total).toFixed(2)} %`;
console.log(`${perRequest(total)} instructions per request over ${requests} requests\n`);
console.log('| group | per request | share |\n|---|---:|---:|');
for (const [group, ir] of [...byGroup].sort((a, b) => b[1] - a[1]))
  console.log(`| ${group} | ${perRequest(ir)} | ${share(ir)} |`);
console.log(`\n| function | per request | share |\n|---|---:|---:|`);
for (const [name, ir] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${name.slice(0, 140).replace(/\|/g, '\\|')} | ${perRequest(ir)} | ${share(ir)} |`);
}
