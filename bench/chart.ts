/**
 * The chart: hand-written SVG (no dependency). One panel per adapter; per workload, one bar per variant
 * with its req/s relative to the baseline (median of the per-round ratios) and a whisker from the
 * lowest to the highest round. Bars above the scale (the ceiling on the no-database route, usually)
 * are cut at the top and carry their value.
 */
import { type Sample, ratio, type Spread } from './report';
import { type AdapterName, BASELINE, baselineOf, CEILING, LABELS, type Variant } from './variants';
import { type Workload, WORKLOADS } from './workloads';

const COLORS: Record<Variant, string> = {
  handwritten: '#8c8c8c',
  'module-off': '#6baed6',
  'module-throw': '#2166ac',
  'module-throw-route-off': '#9ecae1',
  'typeorm-transactional': '#e6550d',
  'nestjs-cls-transactional': '#31a354',
  'raw-pg': '#d9d9d9',
  'hand-interceptor': '#bcbddc',
  'hand-realistic': '#636363',
  'module-realistic': '#08306b',
  'module-per-controller': '#4292c6',
  'module-idle-off': '#c6dbef',
  'hand-interceptor-als': '#756bb1',
  'hand-als': '#9e9ac8',
  'hand-als-handler': '#dadaeb',
  'typeorm-transactional-cls-hooked': '#fdae6b',
  'nestjs-cls-no-middleware': '#a1d99b',
  'gql-handwritten': '#525252',
  'gql-module': '#2166ac',
  'gql-nestjs-cls': '#31a354',
};

const WORKLOAD_LABELS: Record<Workload, string> = {
  transfer: 'write (POST /transfer)',
  read: 'read (GET /balances)',
  nodb: 'no database (GET /ping)',
  mix: 'mix 80 % read / 20 % write',
  'gql-write': 'GraphQL mutation (÷ its hand-written)',
  'gql-read': 'GraphQL query + field resolver (÷ its hand-written)',
};

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export interface ChartOptions {
  samples: Sample[];
  adapters: AdapterName[];
  workloads: Workload[];
  /** Variants to draw, in legend order (same-process variants are best left out: they share a bar's process). */
  variants: Variant[];
  title: string;
  subtitle: string;
}

export function renderChart(options: ChartOptions): string {
  const { samples, adapters, variants } = options;
  const workloads = WORKLOADS.filter((w) => options.workloads.includes(w));
  const values = new Map<string, Spread>();
  for (const adapter of adapters) {
    for (const workload of workloads) {
      const mine = samples.filter((s) => s.adapter === adapter && s.workload === workload);
      const baseline = baselineOf(workload);
      for (const variant of variants) {
        const r =
          variant === baseline
            ? mine.some((s) => s.variant === baseline)
              ? { median: 1, min: 1, max: 1 }
              : undefined
            : ratio(mine, variant, baseline);
        if (r) values.set(`${adapter}/${workload}/${variant}`, r);
      }
    }
  }
  // The scale fits every bar but the ceiling's, which may be cut.
  let top = 1.2;
  for (const [key, r] of values) if (!key.endsWith(`/${CEILING}`)) top = Math.max(top, r.max * 1.1);
  const step = top > 3 ? 0.5 : top > 1.5 ? 0.25 : 0.1;
  top = Math.ceil(top / step) * step;

  const width = 980;
  const left = 56;
  const right = 16;
  const panelHeight = 260;
  const panelGap = 56;
  const legendRows = Math.ceil(variants.length / 3);
  const headerHeight = 66 + legendRows * 18;
  const height = headerHeight + adapters.length * (panelHeight + panelGap) + 8;
  const plotWidth = width - left - right;
  const groupWidth = plotWidth / Math.max(1, workloads.length);
  const barWidth = Math.min(30, (groupWidth * 0.8) / Math.max(1, variants.length));

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="600">${escape(options.title)}</text>`,
    `<text x="${left}" y="40" fill="#555">${escape(options.subtitle)}</text>`,
  ];
  variants.forEach((variant, i) => {
    const x = left + (i % 3) * 300;
    const y = 56 + Math.floor(i / 3) * 18;
    out.push(
      `<rect x="${x}" y="${y}" width="12" height="12" fill="${COLORS[variant]}" stroke="#555" stroke-width="0.5"/>`,
      `<text x="${x + 18}" y="${y + 10}">${escape(LABELS[variant])}</text>`,
    );
  });

  adapters.forEach((adapter, p) => {
    const top0 = headerHeight + p * (panelHeight + panelGap) + 20;
    const bottom = top0 + panelHeight - 40;
    const y = (v: number) => bottom - (Math.min(v, top) / top) * (bottom - top0);
    out.push(
      `<text x="${left}" y="${top0 - 8}" font-size="13" font-weight="600">${escape(adapter === 'express' ? 'Express' : 'Fastify')}</text>`,
    );
    for (let v = 0; v <= top + 1e-9; v += step) {
      const yy = y(v).toFixed(1);
      out.push(
        `<line x1="${left}" x2="${width - right}" y1="${yy}" y2="${yy}" stroke="#e5e5e5"/>`,
        `<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${v.toFixed(step < 0.25 ? 1 : 2)}</text>`,
      );
    }
    out.push(
      `<line x1="${left}" x2="${width - right}" y1="${y(1).toFixed(1)}" y2="${y(1).toFixed(1)}" stroke="#333" stroke-dasharray="4 3"/>`,
    );
    out.push(
      `<text transform="translate(${left - 40} ${((top0 + bottom) / 2).toFixed(1)}) rotate(-90)" text-anchor="middle" fill="#555">req/s ÷ ${escape(LABELS[BASELINE])}</text>`,
    );
    workloads.forEach((workload, g) => {
      const present = variants.filter((v) => values.has(`${adapter}/${workload}/${v}`));
      const groupLeft = left + g * groupWidth + (groupWidth - present.length * barWidth) / 2;
      present.forEach((variant, i) => {
        const r = values.get(`${adapter}/${workload}/${variant}`)!;
        const x = groupLeft + i * barWidth;
        const cut = r.median > top;
        out.push(
          `<rect x="${(x + 1).toFixed(1)}" y="${y(r.median).toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${(bottom - y(r.median)).toFixed(1)}" fill="${COLORS[variant]}" stroke="#555" stroke-width="0.5">` +
            `<title>${escape(`${LABELS[variant]}, ${adapter}, ${workload}: ${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`)}</title></rect>`,
        );
        const cx = (x + barWidth / 2).toFixed(1);
        if (!cut && r.max > r.min) {
          out.push(
            `<line x1="${cx}" x2="${cx}" y1="${y(r.max).toFixed(1)}" y2="${y(r.min).toFixed(1)}" stroke="#222"/>`,
            `<line x1="${(x + barWidth / 2 - 3).toFixed(1)}" x2="${(x + barWidth / 2 + 3).toFixed(1)}" y1="${y(r.max).toFixed(1)}" y2="${y(r.max).toFixed(1)}" stroke="#222"/>`,
            `<line x1="${(x + barWidth / 2 - 3).toFixed(1)}" x2="${(x + barWidth / 2 + 3).toFixed(1)}" y1="${y(r.min).toFixed(1)}" y2="${y(r.min).toFixed(1)}" stroke="#222"/>`,
          );
        }
        if (cut) {
          out.push(
            `<path d="M${(x + 1).toFixed(1)} ${(y(top) + 6).toFixed(1)} l${((barWidth - 2) / 2).toFixed(1)} -5 l${((barWidth - 2) / 2).toFixed(1)} 5" fill="#fff" stroke="#555" stroke-width="0.8"/>`,
          );
        }
        const labelY = cut ? y(top) + 18 : Math.min(y(r.max), y(r.median)) - 4;
        out.push(
          `<text x="${cx}" y="${labelY.toFixed(1)}" text-anchor="middle" font-size="9.5" fill="#222">${r.median.toFixed(2)}</text>`,
        );
      });
      out.push(
        `<text x="${(left + g * groupWidth + groupWidth / 2).toFixed(1)}" y="${(bottom + 18).toFixed(1)}" text-anchor="middle">${escape(WORKLOAD_LABELS[workload])}</text>`,
      );
    });
    out.push(`<line x1="${left}" x2="${width - right}" y1="${bottom}" y2="${bottom}" stroke="#333"/>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
