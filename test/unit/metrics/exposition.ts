/**
 * A strict reader of the Prometheus text exposition format (0.0.4) for tests: it
 * throws on anything a Prometheus server would refuse (a sample before its TYPE, a
 * family declared twice, a bad label, a non-numeric value, a histogram whose buckets
 * go down or whose +Inf bucket differs from _count).
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    const name = text.slice(i, eq);
    if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) throw new Error(`bad label name "${name}"`);
    if (text[eq + 1] !== '"') throw new Error(`label ${name}: value not quoted`);
    let v = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const n = text[++j];
        v += n === 'n' ? '\n' : n === '\\' ? '\\' : n === '"' ? '"' : `\\${n}`;
      } else v += text[j];
    }
    if (j >= text.length) throw new Error(`label ${name}: unterminated value`);
    if (name in out) throw new Error(`label ${name} twice`);
    out[name] = v;
    i = j + 1;
    if (text[i] === ',') i++;
  }
  return out;
}

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad value "${s}"`);
  return Number(s);
}

function familyOf(name: string, families: Map<string, PromFamily>): PromFamily | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const f = families.get(base);
  return f && f.type === 'histogram' ? f : undefined;
}

export function parseExposition(text: string): Map<string, PromFamily> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta;
      if (!NAME.test(name!)) throw new Error(`bad metric name ${name}`);
      const f = families.get(name!) ?? { name: name!, type: '', help: '', samples: [] };
      if (kind === 'TYPE') {
        if (f.type) throw new Error(`TYPE of ${name} twice`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest!))
          throw new Error(`bad type ${rest}`);
        f.type = rest!;
      } else f.help = rest!;
      families.set(name!, f);
      continue;
    }
    if (line.startsWith('#') || line === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const f = familyOf(m[1]!, families);
    if (!f?.type) throw new Error(`sample ${m[1]} before its TYPE`);
    f.samples.push({ name: m[1]!, labels: parseLabels(m[2] ?? ''), value: parseValue(m[3]!) });
  }
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: PromFamily): void {
  const series = new Map<string, PromSample[]>();
  for (const s of f.samples) {
    const { le: _le, ...rest } = s.labels;
    const k = JSON.stringify(rest);
    series.set(k, [...(series.get(k) ?? []), s]);
  }
  for (const samples of series.values()) {
    const buckets = samples.filter((s) => s.name.endsWith('_bucket'));
    let prev = -Infinity;
    let prevCount = 0;
    for (const b of buckets) {
      const le = parseValue(b.labels.le!);
      if (le <= prev) throw new Error(`${f.name}: le not increasing`);
      if (b.value < prevCount) throw new Error(`${f.name}: bucket counts go down`);
      prev = le;
      prevCount = b.value;
    }
    const count = samples.find((s) => s.name.endsWith('_count'))?.value;
    if (prev !== Infinity || prevCount !== count) throw new Error(`${f.name}: +Inf ≠ _count`);
  }
}
