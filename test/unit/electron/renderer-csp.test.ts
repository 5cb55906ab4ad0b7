/**
 * The renderer page's own Content-Security-Policy (renderer/index.html). The window's
 * app://branchsan/ responses carry main's header (electron/src/security.ts) and the
 * <meta> policy applies as well; the <meta> one is kept no weaker than the header, so
 * that a page the header did not reach (Electron's checklist warns of file:// pages)
 * would still get all of it but connect-src.
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

describe('renderer/index.html: the policy the page is sure to get, header or not', () => {
  // The <meta> policy may allow 'self' connections (the web console's /api socket needs
  // them, and the engine sends its own header there), but nothing else main's header forbids.
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
