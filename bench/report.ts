/**
 * Statistics and the Markdown report: medians with min–max, and ratios taken round by round (two
 * variants measured minutes apart on a shared machine are compared only within the same round).
 */
import { ADAPTERS, type AdapterName, BASELINE, CEILING, LABELS, PEERS, SAME_PROCESS, type Variant } from './variants';
import { type Workload, WORKLOAD_INFO, WORKLOADS } from './workloads';

export interface Sample {
  adapter: AdapterName;
  workload: Workload;
  round: number;
  position: number;
  variant: Variant;
  rps: number;
  p50: number;
  p99: number;
  total: number;
  /** Server CPU (user + system) per completed request, in microseconds; undefined off Linux. */
  cpuUs?: number;
  ok: number;
  errors: number;
  timeouts: number;
  non2xx: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface MemorySnapshot {
  label: string;
  /** Responses the process had sent when the snapshot was taken. */
  requests: number;
  gc: boolean;
  rss: number;
  heapUsed: number;
}

export interface ProcessMemory {
  name: string;
  snapshots: MemorySnapshot[];
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function spread(values: number[]): Spread | undefined {
  if (values.length === 0) return undefined;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

export const fmt0 = (n: number) => Math.round(n).toLocaleString('en-US');
export const fmt2 = (n: number) => n.toFixed(2);
const fmtSpread = (s: Spread | undefined) => (s ? `${fmt2(s.median)} (${fmt2(s.min)}–${fmt2(s.max)})` : 'n/a');
const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/** Throughput ratio a ÷ b, round by round, within one adapter and workload. */
export function ratio(samples: Sample[], a: Variant, b: Variant): Spread | undefined {
  const values: number[] = [];
  const rounds = new Set(samples.map((s) => s.round));
  for (const round of rounds) {
    const x = samples.find((s) => s.round === round && s.variant === a);
    const y = samples.find((s) => s.round === round && s.variant === b);
    if (x && y && y.rps > 0) values.push(x.rps / y.rps);
  }
  return spread(values);
}

/** CPU per request, b ÷ a round by round (below 1: a needs more CPU per request than b). */
export function cpuRatio(samples: Sample[], a: Variant, b: Variant): Spread | undefined {
  const values: number[] = [];
  const rounds = new Set(samples.map((s) => s.round));
  for (const round of rounds) {
    const x = samples.find((s) => s.round === round && s.variant === a);
    const y = samples.find((s) => s.round === round && s.variant === b);
    if (x?.cpuUs !== undefined && y?.cpuUs !== undefined && x.cpuUs > 0) values.push(y.cpuUs / x.cpuUs);
  }
  return spread(values);
}

const failures = (samples: Sample[]) => samples.reduce((n, s) => n + s.errors + s.timeouts + s.non2xx, 0);

/** The variants every row is compared with, among those measured: the baseline, each peer, the ceiling. */
function references(variants: Variant[]): Variant[] {
  return [BASELINE, ...PEERS, CEILING].filter((v) => variants.includes(v));
}

/** One table: one adapter, one workload. */
export function workloadTable(adapter: AdapterName, workload: Workload, samples: Sample[], variants: Variant[]): string[] {
  const mine = samples.filter((s) => s.adapter === adapter && s.workload === workload);
  const present = variants.filter((v) => mine.some((s) => s.variant === v));
  if (present.length === 0) return [];
  const refs = references(present);
  const lines = [
    `### ${adapter} · ${WORKLOAD_INFO[workload].title}`,
    '',
    `| variant | req/s median (min–max) | ${refs.map((r) => `÷ ${LABELS[r]} | `).join('')}p99 ms | server CPU µs/req | failed |`,
    `|---|---|${refs.map(() => '---|').join('')}---|---|---|`,
  ];
  for (const variant of present) {
    const own = mine.filter((s) => s.variant === variant);
    const rps = spread(own.map((s) => s.rps))!;
    const cpu = own.map((s) => s.cpuUs).filter((v): v is number => v !== undefined);
    const cells = refs.map((ref) => (ref === variant ? '1' : fmtSpread(ratio(mine, variant, ref))));
    lines.push(
      `| ${LABELS[variant]} | ${fmt0(rps.median)} (${fmt0(rps.min)}–${fmt0(rps.max)}) | ${cells.map((c) => `${c} | `).join('')}` +
        `${median(own.map((s) => s.p99)).toFixed(1)} | ${cpu.length ? fmt0(median(cpu)) : 'n/a'} | ${failures(own)} |`,
    );
  }
  if (WORKLOAD_INFO[workload].touchesDb) {
    const sameProcess = Object.entries(SAME_PROCESS).find(([v]) => present.includes(v as Variant));
    if (sameProcess) {
      const [variant, { host }] = sameProcess as [Variant, { host: Variant }];
      const r = ratio(mine, host, variant);
      const c = cpuRatio(mine, host, variant);
      if (r) {
        lines.push(
          '',
          `The guard, measured in one process (${LABELS[host]} ÷ ${LABELS[variant]}): req/s ${fmtSpread(r)}, ` +
            `CPU/req ${fmtSpread(c)}.`,
        );
      }
    }
    const twoProcesses = ratio(mine, 'module-throw', 'module-off');
    if (twoProcesses) {
      lines.push(
        '',
        `The guard across two processes (${LABELS['module-throw']} ÷ ${LABELS['module-off']}): req/s ${fmtSpread(twoProcesses)}, ` +
          `CPU/req ${fmtSpread(cpuRatio(mine, 'module-throw', 'module-off'))}.`,
      );
    }
  }
  return lines;
}

/** Where the module stands: its req/s ratio against the baseline, each peer and the ceiling, per adapter and workload. */
export function summaryTable(samples: Sample[], variants: Variant[], subject: Variant = 'module-throw'): string[] {
  if (!variants.includes(subject)) return [];
  const refs = references(variants).filter((v) => v !== subject);
  if (refs.length === 0) return [];
  const lines = [
    `### Summary: ${LABELS[subject]}, req/s ÷ each (median of the per-round ratios, min–max)`,
    '',
    `| adapter | workload | ${refs.map((r) => LABELS[r]).join(' | ')} |`,
    `|---|---|${refs.map(() => '---|').join('')}`,
  ];
  for (const adapter of ADAPTERS) {
    for (const workload of WORKLOADS) {
      const mine = samples.filter((s) => s.adapter === adapter && s.workload === workload);
      if (!mine.some((s) => s.variant === subject)) continue;
      lines.push(`| ${adapter} | ${workload} | ${refs.map((r) => fmtSpread(ratio(mine, subject, r))).join(' | ')} |`);
    }
  }
  return lines;
}

/** RSS and heap after a forced GC: at start, after the warm-up, after each round and at the end. */
export function memoryTable(processes: ProcessMemory[]): string[] {
  const lines = [
    '### Memory after a forced GC (MB)',
    '',
    '| server | requests served | RSS: start → warm → end | heap used: start → warm → end | heap used after each round | heap, end − warm |',
    '|---|---|---|---|---|---|',
  ];
  for (const p of processes) {
    const at = (label: string) => p.snapshots.find((s) => s.label === label);
    const start = at('start');
    const warm = at('warm');
    const end = at('end');
    const rounds = p.snapshots.filter((s) => /^round /.test(s.label));
    const triple = (key: 'rss' | 'heapUsed') => [start, warm, end].map((s) => (s ? mb(s[key]) : '–')).join(' → ');
    const growth =
      warm && end ? `${(end.heapUsed - warm.heapUsed >= 0 ? '+' : '') + mb(end.heapUsed - warm.heapUsed)} (${(((end.heapUsed - warm.heapUsed) / warm.heapUsed) * 100).toFixed(1)} %)` : '–';
    lines.push(
      `| ${p.name} | ${fmt0(end?.requests ?? 0)} | ${triple('rss')} | ${triple('heapUsed')} | ${rounds.map((s) => mb(s.heapUsed)).join(', ') || '–'} | ${growth} |`,
    );
  }
  if (processes.some((p) => p.snapshots.some((s) => !s.gc))) lines.push('', '!!! some snapshots were taken without a forced GC (no --expose-gc) !!!');
  return lines;
}
