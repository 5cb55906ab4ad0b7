/**
 * The renderer page's own Content-Security-Policy (renderer/index.html). Electron's
 * checklist: a CSP header cannot be relied on for pages loaded over file://, which is
 * how main loads the window, so there the <meta> policy is the one that surely
 * applies; it must be no weaker than the header main sets (electron/src/security.ts).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../../../electron/src/security.js';

/** Directive name -> source tokens, lower-cased names, in policy order. */
function parseCsp(policy: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of policy.split(';')) {
    const [name, ...sources] = part.trim().split(/\s+/);
    if (name && !out.has(name.toLowerCase())) out.set(name.toLowerCase(), sources);
  }
  return out;
}

/** The sources a directive ends up with, following CSP3's fallback lists; undefined: no limit. */
function effective(csp: Map<string, string[]>, directive: string): string[] | undefined {
  const fallbacks: Record<string, string[]> = {
    'frame-src': ['frame-src', 'child-src', 'default-src'],
    'worker-src': ['worker-src', 'child-src', 'script-src', 'default-src'],
    'base-uri': ['base-uri'],
    'form-action': ['form-action'],
  };
  for (const d of fallbacks[directive] ?? [directive, 'default-src']) {
    const s = csp.get(d);
    if (s) return s.filter((t) => t !== "'none'");
  }
  return undefined;
}

describe('renderer/index.html: the policy a file:// page is sure to get', () => {
  // Electron's checklist: a CSP header cannot be relied on for pages loaded over file://,
  // which is how main loads the window; there the <meta> policy is the one that surely
  // applies. It may allow 'self' connections (the web console's /api socket needs them,
  // and the engine sends its own header there), but nothing else main's header forbids.
  const html = readFileSync(new URL('../../../renderer/index.html', import.meta.url), 'utf8');
  const meta = /http-equiv="Content-Security-Policy"\s+content="([^"]*)"/.exec(html)?.[1];
  const header = parseCsp(CONTENT_SECURITY_POLICY);

  it.each(
    [...header.keys()].filter((d) => d !== 'frame-ancestors'), // not honoured in <meta>
  )('%s is no weaker in the <meta> policy than in main header', (directive) => {
    expect(meta).toBeDefined();
    const allowed = new Set(effective(header, directive) ?? ['*']);
    if (directive === 'connect-src') allowed.add("'self'");
    const given = effective(parseCsp(meta ?? ''), directive) ?? ['*'];
    expect(given.filter((s) => !allowed.has(s))).toEqual([]);
  });
});
