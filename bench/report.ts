/**
 * Statistics and the Markdown report: medians with min–max, and ratios taken round by round (two
 * variants measured minutes apart on a shared machine are compared only within the same round).
 */
import {
  ADAPTERS,
  type AdapterName,
  BASELINE,
  CEILING,
  GQL_BASELINE,
  GQL_MODULE,
  GQL_PEER,
  LABELS,
  PEERS,
  SAME_PROCESS,
  TARGETS,
  type Variant,
} from './variants';
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

/** The variants every row is compared with, among those measured: the baseline, the baseline behind a no-op interceptor, each peer, the ceiling. */
function references(variants: Variant[]): Variant[] {
  if (variants.some((v) => v.startsWith('gql-'))) return [GQL_BASELINE, GQL_PEER].filter((v) => variants.includes(v));
  return [BASELINE, 'hand-interceptor' as Variant, ...PEERS, CEILING].filter((v) => variants.includes(v));
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

/** A ratio against its target: `0.98 (0.93–1.02) met`, or `**0.95** (0.90–1.01) missed`; judged on the median. */
function judged(r: Spread | undefined, atLeast: number): string {
  if (!r) return 'n/a';
  return r.median >= atLeast ? `${fmtSpread(r)} met` : `**${fmt2(r.median)}** (${fmt2(r.min)}–${fmt2(r.max)}) missed`;
}

/** The samples of one adapter and workload. */
const cell = (samples: Sample[], adapter: AdapterName, workload: Workload) =>
  samples.filter((s) => s.adapter === adapter && s.workload === workload);

/** The adapters and workloads on which both variants were measured. */
function cells(samples: Sample[], a: Variant, b: Variant): { adapter: AdapterName; workload: Workload; mine: Sample[] }[] {
  const out = [];
  for (const adapter of ADAPTERS) {
    for (const workload of WORKLOADS) {
      const mine = cell(samples, adapter, workload);
      if (mine.some((s) => s.variant === a) && mine.some((s) => s.variant === b)) out.push({ adapter, workload, mine });
    }
  }
  return out;
}

const target = (subject: Variant, reference: Variant) => TARGETS.find((t) => t.subject === subject && t.reference === reference);

/**
 * Where the module stands, per adapter and workload: its req/s ratio against hand-written code behind
 * a no-op interceptor and against @nestjs-cls/transactional (each with its target, met or missed),
 * against typeorm-transactional, hand-written code and the ceiling; and how much of its distance to
 * hand-written code is Nest's interceptor pipeline (hand-written + no-op interceptor ÷ hand-written).
 */
export function summaryTable(samples: Sample[], variants: Variant[], subject: Variant = 'module-throw'): string[] {
  if (!variants.includes(subject)) return [];
  const refs = (['hand-interceptor', 'nestjs-cls-transactional', 'typeorm-transactional', BASELINE, CEILING] as Variant[]).filter(
    (v) => variants.includes(v),
  );
  const pipeline = variants.includes('hand-interceptor') && variants.includes(BASELINE);
  if (refs.length === 0) return [];
  const header = (r: Variant) => {
    const t = target(subject, r);
    return `÷ ${LABELS[r]}${t ? ` (target ≥ ${fmt2(t.atLeast)})` : ''}`;
  };
  const lines = [
    `### Summary: ${LABELS[subject]}, req/s ÷ each (median of the per-round ratios, min–max)`,
    '',
    `| adapter | workload | ${refs.map(header).join(' | ')} |${pipeline ? " Nest's pipeline: hand-written + no-op interceptor ÷ hand-written | the pipeline's share of the module's distance to hand-written |" : ''}`,
    `|---|---|${refs.map(() => '---|').join('')}${pipeline ? '---|---|' : ''}`,
  ];
  for (const adapter of ADAPTERS) {
    for (const workload of WORKLOADS) {
      const mine = cell(samples, adapter, workload);
      if (!mine.some((s) => s.variant === subject)) continue;
      const cellsOf = refs.map((r) => {
        const t = target(subject, r);
        const value = ratio(mine, subject, r);
        return t?.workloads.includes(workload) ? judged(value, t.atLeast) : fmtSpread(value);
      });
      let extra = '';
      if (pipeline) {
        const p = ratio(mine, 'hand-interceptor', BASELINE);
        const m = ratio(mine, subject, BASELINE);
        // Only where the module is measurably behind hand-written code (by 1 % or more): else no distance to share out.
        let share = 'n/a';
        if (p && m) {
          if (m.median > 0.99) share = 'no distance';
          else if (p.median >= 1) share = 'none: the pipeline measured no cost';
          else share = `${Math.round(((1 - p.median) / (1 - m.median)) * 100)} %`;
        }
        extra = ` ${fmtSpread(p)} | ${share} |`;
      }
      lines.push(`| ${adapter} | ${workload} | ${cellsOf.join(' | ')} |${extra}`);
    }
  }
  if (pipeline) {
    lines.push(
      '',
      "The module ÷ hand-written is the product of Nest's pipeline (hand-written + no-op interceptor ÷ hand-written: what any " +
        'global interceptor costs) and the module ÷ hand-written + no-op interceptor (what the module adds on top of it). ' +
        'The share is (1 − pipeline) ÷ (1 − module ÷ hand-written), from the medians, where the module is 1 % or more behind ' +
        'hand-written code; above 100 %, the module measured faster than hand-written code behind the no-op interceptor.',
    );
  }
  return lines;
}

/** The realistic app: the module against hand-written code, both with a ValidationPipe, ClassSerializerInterceptor and an auth guard. */
export function realisticTable(samples: Sample[], variants: Variant[]): string[] {
  const [subject, reference] = ['module-realistic', 'hand-realistic'] as Variant[];
  if (!variants.includes(subject) || !variants.includes(reference)) return [];
  const t = target(subject, reference)!;
  const lines = [
    `### Realistic app (global ValidationPipe with a class-validator DTO, ClassSerializerInterceptor, auth guard): req/s ratios`,
    '',
    `| adapter | workload | ${LABELS[subject]} ÷ ${LABELS[reference]} (target ≥ ${fmt2(t.atLeast)}) | ${LABELS[reference]} ÷ ${LABELS[BASELINE]} (what the app's pipeline costs) | ${LABELS[subject]} ÷ ${LABELS['module-throw']} |`,
    '|---|---|---|---|---|',
  ];
  for (const { adapter, workload, mine } of cells(samples, subject, reference)) {
    lines.push(
      `| ${adapter} | ${workload} | ${t.workloads.includes(workload) ? judged(ratio(mine, subject, reference), t.atLeast) : fmtSpread(ratio(mine, subject, reference))} | ` +
        `${fmtSpread(ratio(mine, reference, BASELINE))} | ${fmtSpread(ratio(mine, subject, 'module-throw'))} |`,
    );
  }
  return lines;
}

/** `mount: false`, the interceptor bound per controller: the route without a database, which then runs no interceptor. */
export function perControllerTable(samples: Sample[], variants: Variant[]): string[] {
  const subject: Variant = 'module-per-controller';
  if (!variants.includes(subject) || !variants.includes(BASELINE)) return [];
  const lines = [
    `### The module bound per controller (forRoot({ mount: false }), @UseInterceptors(TransactionInterceptor) on the database controller): req/s ratios`,
    '',
    `| adapter | workload | ${LABELS[subject]} ÷ ${LABELS[BASELINE]} | ${LABELS['module-throw']} (bound globally) ÷ ${LABELS[BASELINE]} | ${LABELS[subject]} ÷ ${LABELS['module-throw']} |`,
    '|---|---|---|---|---|',
  ];
  for (const { adapter, workload, mine } of cells(samples, subject, BASELINE)) {
    lines.push(
      `| ${adapter} | ${workload} | ${fmtSpread(ratio(mine, subject, BASELINE))} | ${fmtSpread(ratio(mine, 'module-throw', BASELINE))} | ${fmtSpread(ratio(mine, subject, 'module-throw'))} |`,
    );
  }
  return lines;
}

/** The idle-in-transaction report's cost: the module with it (the default outside production) ÷ without it, and the CPU per request. */
export function idleTable(samples: Sample[], variants: Variant[]): string[] {
  const [subject, reference] = ['module-throw', 'module-idle-off'] as Variant[];
  if (!variants.includes(subject) || !variants.includes(reference)) return [];
  const lines = [
    `### The idle-in-transaction report: ${LABELS[subject]} (report on, the default outside production) ÷ ${LABELS[reference]}`,
    '',
    '| adapter | workload | req/s | CPU per request, off ÷ on | within the noise (1 inside the req/s min–max) |',
    '|---|---|---|---|---|',
  ];
  for (const { adapter, workload, mine } of cells(samples, subject, reference)) {
    const r = ratio(mine, subject, reference);
    lines.push(
      `| ${adapter} | ${workload} | ${fmtSpread(r)} | ${fmtSpread(cpuRatio(mine, subject, reference))} | ${r ? (r.min <= 1 && r.max >= 1 ? 'yes' : 'no') : 'n/a'} |`,
    );
  }
  return lines;
}

/**
 * GraphQL: the module ÷ hand-written (a QueryRunner per operation) and ÷ @nestjs-cls/transactional, per
 * adapter (Apollo on Express, Mercurius on Fastify), beside the same ratios on the HTTP routes with the
 * same units of work (the mutation is `POST /transfer`'s unit; the query reads two rows like `GET /balances`).
 */
export function graphQLTable(samples: Sample[], variants: Variant[]): string[] {
  if (!variants.includes(GQL_MODULE)) return [];
  const http: Partial<Record<Workload, Workload>> = { 'gql-write': 'transfer', 'gql-read': 'read' };
  const lines = [
    '### GraphQL (Apollo on Express, Mercurius on Fastify): req/s ratios beside the HTTP ones (median of the per-round ratios, min–max)',
    '',
    `| adapter | workload | ${LABELS[GQL_MODULE]} ÷ ${LABELS[GQL_BASELINE]} | ${LABELS[GQL_MODULE]} ÷ ${LABELS[GQL_PEER]} | HTTP workload | ${LABELS['module-throw']} ÷ ${LABELS[BASELINE]} | ${LABELS['module-throw']} ÷ ${LABELS['nestjs-cls-transactional']} |`,
    '|---|---|---|---|---|---|---|',
  ];
  for (const adapter of ADAPTERS) {
    for (const workload of ['gql-write', 'gql-read'] as Workload[]) {
      const mine = cell(samples, adapter, workload);
      if (!mine.some((s) => s.variant === GQL_MODULE)) continue;
      const httpWorkload = http[workload]!;
      const theirs = cell(samples, adapter, httpWorkload);
      lines.push(
        `| ${adapter} | ${workload} | ${fmtSpread(ratio(mine, GQL_MODULE, GQL_BASELINE))} | ${fmtSpread(ratio(mine, GQL_MODULE, GQL_PEER))} | ${httpWorkload} | ` +
          `${fmtSpread(ratio(theirs, 'module-throw', BASELINE))} | ${fmtSpread(ratio(theirs, 'module-throw', 'nestjs-cls-transactional'))} |`,
      );
    }
  }
  lines.push(
    '',
    `On gql-read, ${LABELS[GQL_PEER]} runs two transactions per query: its @Transactional() methods are per resolver, so the ` +
      'field resolver reads in a transaction of its own; the module and the hand-written variant run the operation in one.',
  );
  return lines;
}

/** Each target: on how many adapter × workload cells it was met, and the cells where it was missed. */
export function targetsTable(samples: Sample[], variants: Variant[]): string[] {
  const lines = [
    '### Targets (req/s ratio, median of the per-round ratios; met when the median reaches the target)',
    '',
    '| target | met | missed |',
    '|---|---|---|',
  ];
  for (const t of TARGETS) {
    const what = `${t.what}: ${LABELS[t.subject]} ÷ ${LABELS[t.reference]} ≥ ${fmt2(t.atLeast)} on ${t.workloads.join(', ')}`;
    if (!variants.includes(t.subject) || !variants.includes(t.reference)) {
      lines.push(`| ${what} | not measured | |`);
      continue;
    }
    const measured = cells(samples, t.subject, t.reference).filter((c) => t.workloads.includes(c.workload));
    const missed: string[] = [];
    let met = 0;
    for (const { adapter, workload, mine } of measured) {
      const r = ratio(mine, t.subject, t.reference);
      if (r && r.median >= t.atLeast) met++;
      else missed.push(`${adapter} ${workload} ${fmtSpread(r)}`);
    }
    lines.push(`| ${what} | ${met} of ${measured.length} | ${missed.length ? `**${missed.join('; ')}**` : 'none'} |`);
  }
  return lines;
}

/** Every table of the module's standing: the summary, the realistic app, per controller, the idle accounting, the targets. */
export function standingReport(samples: Sample[], variants: Variant[]): string[] {
  const out: string[] = [];
  for (const table of [summaryTable, graphQLTable, realisticTable, perControllerTable, idleTable, targetsTable]) {
    const lines = table(samples, variants);
    if (lines.length > 0) out.push(...lines, '');
  }
  return out;
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
      warm && end
        ? `${(end.heapUsed - warm.heapUsed >= 0 ? '+' : '') + mb(end.heapUsed - warm.heapUsed)} (${(((end.heapUsed - warm.heapUsed) / warm.heapUsed) * 100).toFixed(1)} %)`
        : '–';
    lines.push(
      `| ${p.name} | ${fmt0(end?.requests ?? 0)} | ${triple('rss')} | ${triple('heapUsed')} | ${rounds.map((s) => mb(s.heapUsed)).join(', ') || '–'} | ${growth} |`,
    );
  }
  if (processes.some((p) => p.snapshots.some((s) => !s.gc)))
    lines.push('', '!!! some snapshots were taken without a forced GC (no --expose-gc) !!!');
  return lines;
}
