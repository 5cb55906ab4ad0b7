/**
 * Chromium for the console tests: Debian's /usr/bin/chromium driven by playwright-core
 * (no browser download), headless, with every background fetch turned off so a test
 * run makes no network traffic beyond the engine under test.
 */
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A fresh browser; each test opens its own context (a clean profile in memory). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
}

export interface PageProblems {
  /** console.error messages with their source URL (Chromium also logs CSP refusals here). */
  consoleErrors: string[];
  /** Uncaught exceptions in the page. */
  pageErrors: string[];
  /** securitypolicyviolation events seen by the page: "directive blocked-uri". */
  cspViolations(): Promise<string[]>;
}

/** Starts recording what went wrong in `page`; call before the first navigation. */
export async function recordProblems(page: Page): Promise<PageProblems> {
  const consoleErrors: string[] = [];
  const pageErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location().url;
    consoleErrors.push(where ? `${m.text()} (${where})` : m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // Injected by the browser driver, not by the page, so the page's CSP does not apply to it.
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { __cspViolations: string[] }).__cspViolations = seen;
    document.addEventListener('securitypolicyviolation', (e) =>
      seen.push(`${e.effectiveDirective} ${e.blockedURI}`),
    );
  });
  return {
    consoleErrors,
    pageErrors,
    cspViolations: () =>
      page.evaluate(
        () => (window as unknown as { __cspViolations?: string[] }).__cspViolations ?? [],
      ),
  };
}
