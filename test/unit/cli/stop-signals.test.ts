/**
 * A stop signal usually arrives twice (the terminal or a group kill signals the launcher
 * and the command, and the launcher forwards its copy). The command must still catch
 * the late copy after its clean stop: otherwise it lands while Node tears the process
 * down, with the default action back, and the command dies of it (seen as
 * test/integration/db-full-disk.test.ts failing about one run in five).
 */
import { expect, it } from 'vitest';
import { onStopRequest, settleStopSignals } from '../../../engine/src/cli/command.js';

it('lingers after a stop signal, so that its forwarded copy still finds the handler', async () => {
  const stops: string[] = [];
  const off = onStopRequest('test', (sig) => stops.push(sig));
  try {
    let settled = false;
    await settleStopSignals().then(() => (settled = true));
    expect(settled).toBe(true); // no signal yet: nothing to wait for
    process.emit('SIGTERM', 'SIGTERM');
    settled = false;
    const settling = settleStopSignals().then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false); // the copy may still come
    process.emit('SIGTERM', 'SIGTERM'); // the launcher's copy: caught, and no second stop
    await settling;
    expect(stops).toEqual(['SIGTERM']);
  } finally {
    off();
  }
});
