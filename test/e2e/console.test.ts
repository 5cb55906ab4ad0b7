/**
 * The web console end to end: a real engine (`branchsan serve`) serves the built
 * renderer, and Chromium opens the URL the engine printed, as a person would: the
 * first run sets the admin password there, later visits sign in with it.
 * Needs `npm run build:engine && npm run build:renderer` (npm test builds first).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { formatDuration } from '../../renderer/src/format/duration.js';
import { connectSocket } from '../helpers/api.js';
import { REPO_ROOT, startEngine as startEngineProcess, tempDir } from '../helpers/engine.js';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, launchChromium, recordProblems } from './helpers/browser.js';
import { assertBuilt, startEngine, type ConsoleEngine } from './helpers/engine.js';

const RESULTS = path.join(REPO_ROOT, 'test-results');
const LIVE_NQN = 'nqn.2026-11.io.branchsan.test:live';
const VIEWPORT = { width: 1280, height: 800 };

describe('web console in Chromium against a real engine', () => {
  let engine: ConsoleEngine;
  let browser: Browser;
  let context: BrowserContext | undefined;
  let dataDir: string;

  beforeAll(async () => {
    assertBuilt();
    fs.mkdirSync(RESULTS, { recursive: true });
    dataDir = tempDir('branchsan-e2e-console-');
    engine = await startEngine({ dataDir });
    browser = await launchChromium();
  });

  afterEach(async () => {
    await context?.close();
    context = undefined;
  });

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  async function openPage(): Promise<Page> {
    context = await browser.newContext({ viewport: VIEWPORT });
    return context.newPage();
  }

  const textOf = async (page: Page, testId: string) =>
    ((await page.getByTestId(testId).textContent()) ?? '').trim();
  const PASSWORD = 'e2e admin passphrase';
  /** The console's address without the setup token, as people bookmark it. */
  const baseUrl = () => engine.consoleUrl.replace(/\?.*$/, '');

  async function signIn(page: Page, password = PASSWORD): Promise<void> {
    await page.goto(baseUrl());
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    await page.getByTestId('password').fill(password);
    await page.getByTestId('login-submit').click();
  }

  it('first run: the printed URL opens the setup page, and choosing the password signs in', async () => {
    const page = await openPage();
    const problems = await recordProblems(page);
    await page.goto(engine.consoleUrl);
    await page.locator('[data-testid="login-page"][data-mode="setup"]').waitFor();
    // The token left the address bar (and so history and bookmarks).
    expect(page.url()).not.toContain('token=');
    expect(await page.title()).toBe('Set up · BranchSAN');
    await page.getByTestId('password').fill(PASSWORD);
    await page.getByTestId('password-repeat').fill(PASSWORD + ' typo');
    await page.getByTestId('login-submit').click();
    expect(await textOf(page, 'login-error')).toBe(
      'The two passwords differ: type the same one twice.',
    );
    await page.getByTestId('password-repeat').fill(PASSWORD);
    await page.screenshot({ path: path.join(RESULTS, 'console-setup.png') });
    await page.getByTestId('login-submit').click();
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    expect(await textOf(page, 'node-id')).toBe(engine.nodeId);
    const cookie = (await context!.cookies()).find((c) => c.name === 'branchsan_session');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(problems.pageErrors).toEqual([]);
    expect(problems.consoleErrors).toEqual([]);
    expect(await problems.cspViolations()).toEqual([]);
  });

  it('signs in through the login page and shows the live status of the engine, within its CSP', async () => {
    const page = await openPage();
    const problems = await recordProblems(page);
    const heartbeats: number[] = [];
    page.on('websocket', (ws) =>
      ws.on('framereceived', ({ payload }) => {
        const msg = JSON.parse(String(payload)) as {
          method?: string;
          params?: { name?: string; data?: { uptimeSec?: number } };
        };
        if (msg.method === 'event' && msg.params?.name === 'system.heartbeat') {
          heartbeats.push(msg.params.data?.uptimeSec ?? -1);
        }
      }),
    );

    // Chromium's other notes on the page (its DevTools 'Issues'): none either
    const notes: string[] = [];
    page.on('console', (m) => {
      if (m.type() !== 'error') notes.push(`${m.type()}: ${m.text()}`);
    });
    await page.goto(baseUrl());
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    expect(await page.title()).toBe('Sign in · BranchSAN');
    expect(heartbeats).toEqual([]); // no WebSocket before signing in
    await page.getByTestId('password').fill(PASSWORD);
    await page.screenshot({ path: path.join(RESULTS, 'console-login.png') });
    await page.keyboard.press('Enter'); // from the password field, as most people do
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await page.getByTestId('node-id').waitFor();
    // the page that replaced the sign-in has the focus at its heading, so a screen reader
    // says where one arrived and the next Tab starts at the top, not in a removed form
    expect(
      await page.evaluate(
        () => `${document.activeElement?.tagName} ${document.activeElement?.textContent}`,
      ),
    ).toBe('H1 Status');

    expect(await textOf(page, 'node-id')).toBe(engine.nodeId);
    expect(await textOf(page, 'pid')).toBe(String(engine.pid));
    expect(await textOf(page, 'hostname')).toBe(os.hostname());
    expect(await textOf(page, 'data-dir')).toBe(engine.dataDir);
    expect(await textOf(page, 'connection-state')).toBe('Connected · web console');
    expect(await textOf(page, 'node-name')).toBe(os.hostname());
    expect(await page.title()).toBe('Status · BranchSAN');
    expect(new URL(page.url()).hash).toBe('#/status');

    // Uptime advances, and what the page shows is what a pushed heartbeat said.
    const first = await textOf(page, 'uptime');
    await page.waitForFunction(
      (before) => document.querySelector('[data-testid="uptime"]')?.textContent?.trim() !== before,
      first,
      { timeout: 5_000 },
    );
    const second = await textOf(page, 'uptime');
    expect(seconds(second)).toBeGreaterThan(seconds(first));
    expect(heartbeats.length).toBeGreaterThan(0);
    expect(heartbeats.map(formatDuration)).toContain(second);

    // A reload keeps the session (the cookie), without signing in again.
    await page.reload();
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();

    await page.screenshot({ path: path.join(RESULTS, 'console-status.png') });
    expect(problems.pageErrors).toEqual([]);
    expect(problems.consoleErrors).toEqual([]);
    expect(await problems.cspViolations()).toEqual([]);
    expect(notes).toEqual([]);
  });

  it('shows the engine’s refusal of a wrong password, in its words', async () => {
    const page = await openPage();
    const problems = await recordProblems(page);
    await signIn(page, 'not the password');
    const error = page.getByTestId('login-error');
    await error.getByText('Wrong password.').waitFor();
    expect(await error.textContent()).toContain('sign-ins from this machine (loopback) pause');
    expect(await page.locator('[data-testid="login-page"]').count()).toBe(1);
    // The submit button was clicked, then disabled while the engine checked: Chromium drops
    // focus from a disabled control, so the page hands it back to the password, selected,
    // and a keyboard user types the next attempt at once.
    const focus = await page.evaluate(() => {
      const el = document.activeElement;
      return {
        id: el?.getAttribute('data-testid') ?? el?.tagName,
        selected:
          el instanceof HTMLInputElement
            ? el.value.slice(el.selectionStart ?? 0, el.selectionEnd ?? 0)
            : '',
      };
    });
    expect(focus).toEqual({ id: 'password', selected: 'not the password' });

    await page.screenshot({ path: path.join(RESULTS, 'console-login-refused.png') });
    expect(problems.pageErrors).toEqual([]);
    // Chromium logs the refused request itself; nothing else may go wrong.
    expect(problems.consoleErrors.filter((e) => !/status of 401 \(Unauthorized\)/.test(e))).toEqual(
      [],
    );
    expect(await problems.cspViolations()).toEqual([]);
    await signIn(page); // a success clears the failures, so the next tests are not locked out
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
  });

  it('says so when the browser does not keep the session cookie, instead of the sign-in page again', async () => {
    const page = await openPage();
    // A browser that refuses cookies (a privacy setting, a policy): the engine's answer
    // to the sign-in reaches the page without its Set-Cookie, as the browser sees it.
    await page.route('**/api/login', async (route) => {
      const req = route.request();
      const res = await fetch(req.url(), {
        method: 'POST',
        headers: await req.allHeaders(),
        body: req.postData() ?? '',
      });
      const headers: Record<string, string> = {};
      res.headers.forEach((v, k) => {
        if (k !== 'set-cookie') headers[k] = v;
      });
      await route.fulfill({ status: res.status, headers, body: await res.text() });
    });
    await signIn(page);
    const error = page.getByTestId('login-error');
    await error.getByText(/did not keep the console’s session cookie/).waitFor();
    expect(await error.textContent()).toContain(
      `Allow cookies for ${new URL(baseUrl()).host} in the browser’s settings`,
    );
    // before: the page went to "Connecting…" and back to an empty sign-in form, no word said
    expect(await page.locator('[data-testid="login-page"][data-mode="sign-in"]').count()).toBe(1);
    expect(await context!.cookies()).toEqual([]);
  });

  it('signs out from the header and is back at the sign-in page', async () => {
    const page = await openPage();
    await signIn(page);
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    // by keyboard: the sign-in page that replaces the app takes the focus in its password
    // field (the autofocus attribute worked only for the page's first load)
    await page.getByTestId('sign-out').focus();
    await page.keyboard.press('Enter');
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    // signed out here at once; the engine's answer clears the cookie
    await expect.poll(() => context!.cookies()).toEqual([]);
    expect(await page.getByTestId('login-notice').count()).toBe(0); // nothing to explain
    expect(await page.evaluate(() => document.activeElement?.getAttribute('data-testid'))).toBe(
      'password',
    );
    await page.reload();
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
  });

  it('signs out here even when the engine cannot be told, and says so', async () => {
    const page = await openPage();
    await signIn(page);
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await page.route('**/api/logout', (route) => route.abort('connectionrefused'));
    await page.getByTestId('sign-out').click();
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    const notice = page.getByTestId('login-notice');
    await notice
      .getByText(/Signed out in this browser, but the engine could not be told/)
      .waitFor();
    expect(await notice.textContent()).toContain('ends by itself');
    // before: the click did nothing at all, the page stayed signed in and connected
    expect(await page.getByTestId('connection-indicator').count()).toBe(0);
  });

  it('says why the sign-in page is back when the session ended elsewhere', async () => {
    const page = await openPage();
    await signIn(page);
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    // another tab of this browser signs out: the engine ends the session and its sockets
    await page.evaluate(() =>
      fetch('api/logout', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'X-BranchSAN-Key': localStorage.getItem('branchsan.pageKey') ?? '',
        },
        body: '{}',
      }),
    );
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    expect(await textOf(page, 'login-notice')).toContain('Your session has ended.');
  });

  it('after signing out and in again, a session that ends elsewhere still says so', async () => {
    const page = await openPage();
    await page.route('**/api/logout', (route) => route.abort('connectionrefused'));
    await signIn(page);
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await page.getByTestId('sign-out').click();
    await page
      .getByTestId('login-notice')
      .getByText(/the engine could not be told/)
      .waitFor();
    await page.unroute('**/api/logout');
    await page.getByTestId('password').fill(PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await page.evaluate(() =>
      fetch('api/logout', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'X-BranchSAN-Key': localStorage.getItem('branchsan.pageKey') ?? '',
        },
        body: '{}',
      }),
    );
    await page.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    // before: no notice, or the old sign-out's "the engine could not be told"
    expect(await textOf(page, 'login-notice')).toContain('Your session has ended.');
  });

  // Before: a second tab kept its sign-in page, asking for the password again, until it
  // was reloaded, though the browser was signed in.
  it('a tab at the sign-in page follows a sign-in in another tab, and a sign-out there', async () => {
    const first = await openPage();
    const second = await context!.newPage();
    await second.goto(baseUrl());
    await second.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    await signIn(first);
    await first.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await second
      .locator('[data-testid="connection-indicator"][data-state="connected"]')
      .waitFor({ timeout: 5000 });
    expect(await textOf(second, 'node-id')).toBe(engine.nodeId);
    // Signed out in the first: the second is at the sign-in page too, told why.
    await first.getByTestId('sign-out').click();
    await second.locator('[data-testid="login-page"][data-mode="sign-in"]').waitFor();
    expect(await textOf(second, 'login-notice')).toContain('Your session has ended.');
    // And in again from the second: the first follows.
    await second.getByTestId('password').fill(PASSWORD);
    await second.getByTestId('login-submit').click();
    await first
      .locator('[data-testid="connection-indicator"][data-state="connected"]')
      .waitFor({ timeout: 5000 });
  });

  it('shows the engine’s refusal of an address it does not serve, instead of "cannot reach"', async () => {
    // a name that resolves to this machine, as localhost.localdomain does on some systems
    const named = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      args: [...CHROMIUM_ARGS, '--host-resolver-rules=MAP branchsan.test 127.0.0.1'],
    });
    try {
      const page = await (await named.newContext({ viewport: VIEWPORT })).newPage();
      const port = new URL(baseUrl()).port;
      await page.goto(`http://branchsan.test:${port}/`);
      const message = page.getByTestId('refusal-message');
      await message.waitFor();
      expect(await message.textContent()).toBe(
        `The console answers only at its own address, 127.0.0.1, not at "branchsan.test:${port}".`,
      );
      expect(await textOf(page, 'refusal-hint')).toBe(
        `Open the console at http://127.0.0.1:${port}/ (through an SSH tunnel: 127.0.0.1 with the tunnel's local port, not localhost).`,
      );
      expect(await page.getByTestId('sign-out').count()).toBe(0); // nothing to sign out of
      expect(await textOf(page, 'connection-indicator')).toContain('Refused');
      await page.screenshot({ path: path.join(RESULTS, 'console-refused-host.png') });
    } finally {
      await named.close();
    }
  });

  it('fits a phone-width window: the header and the summary neither overlap nor squeeze', async () => {
    // 320 CSS px: the narrowest a page must reflow to without scrolling sideways (WCAG 1.4.10)
    context = await browser.newContext({ viewport: { width: 320, height: 700 } });
    const page = await context.newPage();
    await signIn(page);
    await page.getByTestId('last-heartbeat').waitFor();
    const layout = await page.evaluate(() => {
      const box = (sel: string) => {
        const r = document.querySelector(sel)!.getBoundingClientRect();
        return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width };
      };
      const header = [
        '.brand .logo',
        '.product',
        '[data-testid="node-name"]',
        '.nav-link',
        '[data-testid="connection-indicator"]',
        '.sign-out',
      ];
      const overlaps: string[] = [];
      header.forEach((a, i) =>
        header.slice(i + 1).forEach((b) => {
          const [p, q] = [box(a), box(b)];
          const apart =
            p.right <= q.left || q.right <= p.left || p.bottom <= q.top || q.bottom <= p.top;
          if (!apart) overlaps.push(`${a} / ${b}`);
        }),
      );
      // a line box per line of its text: "Sign out" on two lines is a squeezed button
      const signOutText = document.createRange();
      signOutText.selectNodeContents(document.querySelector('.sign-out')!);
      // nothing sticks out of its card on the right (a long node ID, a path, a date)
      const outside = [...document.querySelectorAll('main section')].flatMap((card) => {
        const edge = card.getBoundingClientRect().right;
        return [...card.querySelectorAll('*')]
          .filter((el) => el.getBoundingClientRect().right > edge + 0.5)
          .map((el) => el.getAttribute('data-testid') ?? el.tagName);
      });
      return {
        overlaps,
        outside,
        sideways: document.documentElement.scrollWidth > window.innerWidth,
        signOutLines: signOutText.getClientRects().length,
        summaryText:
          box('[data-testid="engine-summary"] .text').width /
          box('[data-testid="engine-summary"]').width,
      };
    });
    await page.screenshot({ path: path.join(RESULTS, 'console-phone.png'), fullPage: true });
    expect(layout.overlaps).toEqual([]);
    expect(layout.outside).toEqual([]);
    expect(layout.sideways).toBe(false);
    expect(layout.signOutLines).toBe(1);
    // The heading and its sentence take the row, not a column of one word per line
    // beside a heartbeat that would not shrink.
    expect(layout.summaryText).toBeGreaterThan(0.6);
  });

  it('shows where the keyboard focus is in the dark header (focus ring contrast at least 3:1)', async () => {
    const page = await openPage();
    await signIn(page);
    await page.getByTestId('node-id').waitFor();
    const rings: Record<string, number> = {};
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    for (const name of ['nav-link', 'sign-out']) {
      await page.keyboard.press('Tab');
      const ring = await page.evaluate(() => {
        const el = document.activeElement!;
        const rgb = (c: string) =>
          c
            .match(/\d+(\.\d+)?/g)!
            .slice(0, 3)
            .map(Number);
        // WCAG relative luminance, and the contrast ratio of the ring with the header
        const lum = (c: string) => {
          const [r, g, b] = rgb(c).map((v) => {
            const s = v / 255;
            return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
          });
          return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
        };
        const style = getComputedStyle(el);
        const header = getComputedStyle(document.querySelector('.app-header')!).backgroundColor;
        const [a, b] = [lum(style.outlineColor), lum(header)].sort((x, y) => y - x);
        return {
          el: el.classList.contains('nav-link') ? 'nav-link' : el.getAttribute('data-testid'),
          visible: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
          ratio: (a! + 0.05) / (b! + 0.05),
        };
      });
      expect(ring.el).toBe(name);
      expect(ring.visible).toBe(true);
      rings[name] = Math.round(ring.ratio * 10) / 10;
    }
    for (const name of Object.keys(rings)) expect(rings[name], name).toBeGreaterThanOrEqual(3);
  });

  // Last: it stops the engine.
  it('says the connection was lost when the engine stops, keeping the last-known values', async () => {
    const page = await openPage();
    await signIn(page);
    await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
    await page.getByTestId('node-id').waitFor();

    await engine.stop();
    const alert = page.getByTestId('engine-unavailable');
    await alert.waitFor({ timeout: 10_000 });
    expect(await alert.textContent()).toContain(
      'The console lost its connection to the BranchSAN engine. It reconnects by itself',
    );
    expect(await page.getAttribute('[data-testid="connection-indicator"]', 'data-state')).toBe(
      'disconnected',
    );
    expect(await textOf(page, 'node-id')).toBe(engine.nodeId);
    await page.screenshot({ path: path.join(RESULTS, 'console-disconnected.png') });
  });
});

describe('alerts in the web console', () => {
  let engine: ConsoleEngine | undefined;
  let browser: Browser | undefined;
  let dataDir: string;

  beforeAll(async () => {
    assertBuilt();
    fs.mkdirSync(RESULTS, { recursive: true });
    dataDir = tempDir('branchsan-e2e-alerts-');
    // An engine that dies: the next start raises the unexpected-restart alert.
    const first = await startEngineProcess({ dataDir });
    await first.stop('SIGKILL');
    engine = await startEngine({ dataDir });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('lists the active alert with what to do, acknowledging it closes it, and new ones come and go live', async () => {
    const context = await browser!.newContext({ viewport: VIEWPORT });
    try {
      const page = await context.newPage();
      const problems = await recordProblems(page);
      await page.goto(engine!.consoleUrl);
      await chooseFirstPassword(page, 'alerts admin passphrase');
      // raised by the engine's rules (every 5 s) and pushed to the open page
      const item = page.locator('[data-testid="alert"][data-rule="engine.unclean-restart"]');
      await item.waitFor({ timeout: 20_000 });
      expect(await item.getByTestId('alert-severity').textContent()).toBe('Warning');
      expect(await item.getByTestId('alert-title').textContent()).toBe(
        'Engine restarted after an unexpected stop',
      );
      expect(await item.getByTestId('alert-message').textContent()).toMatch(
        /after an unexpected stop \(crash, kill or power loss\)\. Hosts reconnect by themselves/,
      );
      await page.screenshot({ path: path.join(RESULTS, 'console-alerts.png'), fullPage: true });
      // by keyboard: the button is disabled during the call and gone after it, so the
      // focus goes to the Alerts heading instead of being dropped to the page body
      await item.getByTestId('alert-ack').focus();
      await page.keyboard.press('Enter');
      // an incident closes on acknowledgement
      await page.getByTestId('alerts-none').waitFor();
      await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('alerts-title');
      expect(((await page.getByTestId('alerts-count').textContent()) ?? '').trim()).toBe(
        'none active',
      );
      // and stays closed when the page reads the list afresh, where it is listed as closed
      await page.reload();
      await page.getByTestId('alerts-none').waitFor();
      const closed = page.locator('[data-testid="alert-recent"]');
      await closed.first().waitFor();
      expect(await closed.first().getAttribute('data-rule')).toBe('engine.unclean-restart');
      expect(await closed.first().getByTestId('alert-recent-when').textContent()).toMatch(
        /closed when admin@127\.0\.0\.1 acknowledged it/,
      );

      // Live, without a reload: a served file moved away raises a critical alert, and
      // putting it back clears it (the engine's rules run every 5 s).
      const api = await connectSocket(engine!.socketPath);
      const file = path.join(dataDir, '..', `alerts-e2e-${process.pid}.img`);
      try {
        await api.call('target.subsystem.create', { nqn: LIVE_NQN, allowAnyHost: true });
        await api.call('target.namespace.add', {
          nqn: LIVE_NQN,
          backend: { kind: 'file', path: file, createSizeBytes: 1 << 20 },
        });
        fs.renameSync(file, `${file}.moved`);
        const moved = page.locator('[data-testid="alert"][data-rule="volume.backing-file"]');
        await moved.waitFor({ timeout: 20_000 });
        expect(await moved.getByTestId('alert-severity').textContent()).toBe('Critical');
        // and a screen reader says it (the page's live region)
        expect(await page.getByTestId('alerts-announcement').textContent()).toContain(
          `New critical alert: ${await moved.getByTestId('alert-title').textContent()}`,
        );
        expect(await moved.getByTestId('alert-message').textContent()).toContain(
          `Move the file back to ${file}`,
        );
        // acknowledged, it stays active until resolved, and keeps the focus
        await moved.getByTestId('alert-ack').focus();
        await page.keyboard.press('Enter');
        await moved.getByTestId('alert-acked').waitFor();
        await expect
          .poll(() => page.evaluate(() => document.activeElement?.getAttribute('data-rule')))
          .toBe('volume.backing-file');
        fs.renameSync(`${file}.moved`, file);
        await page.getByTestId('alerts-none').waitFor({ timeout: 20_000 });
        // the clear was pushed: it heads the recently closed, resolved
        const resolved = closed.first();
        expect(await resolved.getAttribute('data-rule')).toBe('volume.backing-file');
        expect(await resolved.getByTestId('alert-recent-when').textContent()).toMatch(/resolved /);
        expect(await closed.count()).toBe(2);
      } finally {
        await api.call('target.subsystem.delete', { nqn: LIVE_NQN }).catch(() => undefined);
        api.close();
        for (const f of [file, `${file}.moved`]) fs.rmSync(f, { force: true });
      }
      expect(problems.pageErrors).toEqual([]);
      expect(await problems.cspViolations()).toEqual([]);
    } finally {
      await context.close();
    }
  });
});

describe('a watched console keeps its session; a hidden one lets it end', () => {
  let engine: ConsoleEngine;
  let browser: Browser;
  let dataDir: string;
  const IDLE_SEC = 3;

  beforeAll(async () => {
    assertBuilt();
    dataDir = tempDir('branchsan-e2e-idle-');
    engine = await startEngine({ dataDir, args: ['--session-idle', String(IDLE_SEC)] });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('stays signed in while the dashboard is on screen, and signs out once it is hidden', async () => {
    const context = await browser.newContext({ viewport: VIEWPORT });
    try {
      const page = await context.newPage();
      await page.goto(engine.consoleUrl);
      await chooseFirstPassword(page, 'idle admin passphrase');
      // Before: only the engine's pushes reached the page; they are no use of the
      // session, which ended IDLE_SEC after sign-in although the page was watched.
      await page.waitForTimeout(IDLE_SEC * 3 * 1000);
      expect(await page.getByTestId('login-page').count()).toBe(0);
      expect(await page.getAttribute('[data-testid="connection-indicator"]', 'data-state')).toBe(
        'connected',
      );
      // the tab goes to the background: nothing keeps the session any more
      await page.evaluate(() => {
        Object.defineProperty(document, 'visibilityState', { get: () => 'hidden' });
        document.dispatchEvent(new Event('visibilitychange'));
      });
      await page
        .locator('[data-testid="login-page"][data-mode="sign-in"]')
        .waitFor({ timeout: IDLE_SEC * 4 * 1000 });
      expect(((await page.getByTestId('login-notice').textContent()) ?? '').trim()).toContain(
        'Your session has ended.',
      );
    } finally {
      await context.close();
    }
  });
});

describe('web console over TLS in Chromium', () => {
  let engine: ConsoleEngine;
  let browser: Browser;
  let dataDir: string;

  beforeAll(async () => {
    assertBuilt();
    fs.mkdirSync(RESULTS, { recursive: true });
    dataDir = tempDir('branchsan-e2e-tls-');
    engine = await startEngine({ dataDir, args: ['--console-tls', 'on'] });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await engine?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('shows the fingerprint of the certificate it really serves', async () => {
    expect(engine.consoleUrl).toMatch(/^https:\/\//);
    const url = new URL(engine.consoleUrl);
    const served = await new Promise<string>((resolve, reject) => {
      const s = tls.connect(
        { host: url.hostname, port: Number(url.port), rejectUnauthorized: false },
        () => {
          resolve(s.getPeerCertificate().fingerprint256);
          s.end();
        },
      );
      s.once('error', reject);
    });
    // a self-signed certificate: the person compares fingerprints instead of trusting a CA
    const context = await browser.newContext({ viewport: VIEWPORT, ignoreHTTPSErrors: true });
    try {
      const page = await context.newPage();
      const problems = await recordProblems(page);
      await page.goto(engine.consoleUrl);
      await chooseFirstPassword(page, 'tls admin passphrase');
      const shown = page.getByTestId('console-fingerprint');
      await shown.waitFor();
      expect(((await shown.textContent()) ?? '').trim()).toBe(served);
      expect(((await page.getByTestId('console-tls').textContent()) ?? '').trim()).toBe(
        'TLS, self-signed certificate',
      );
      await page.screenshot({ path: path.join(RESULTS, 'console-tls-status.png'), fullPage: true });
      expect(problems.pageErrors).toEqual([]);
      expect(await problems.cspViolations()).toEqual([]);
    } finally {
      await context.close();
    }
  });
});

/** On the setup page the printed URL opened: chooses the admin password, then waits to be connected. */
async function chooseFirstPassword(page: Page, password: string): Promise<void> {
  await page.locator('[data-testid="login-page"][data-mode="setup"]').waitFor();
  await page.getByTestId('password').fill(password);
  await page.getByTestId('password-repeat').fill(password);
  await page.getByTestId('login-submit').click();
  await page.locator('[data-testid="connection-indicator"][data-state="connected"]').waitFor();
}

/** Inverse of formatDuration, for comparing two readings. */
function seconds(text: string): number {
  const unit: Record<string, number> = { d: 86_400, h: 3_600, min: 60, s: 1 };
  let total = 0;
  for (const [, n, u] of text.matchAll(/(\d+) (d|h|min|s)\b/g)) total += Number(n) * unit[u!]!;
  return total;
}
