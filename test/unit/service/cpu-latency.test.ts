/**
 * The PM QoS request against the real /dev/cpu_dma_latency (the tests run as root on
 * Linux, as the engine service does), and the guard's when-busy / always / off rules.
 * Other test files may hold a request at the same time, so "released" is checked by
 * our own file descriptor being gone, not by the system-wide value.
 */
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CPU_LATENCY_DEVICE,
  CpuLatencyGuard,
  currentCpuLatency,
  heldNote,
  holdCpuLatency,
  requestWithoutEffect,
  type CpuLatencyStatus,
} from '../../../engine/src/service/cpu-latency.js';

/** Our open descriptors on the device. */
function ourHolds(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === CPU_LATENCY_DEVICE) n++;
    } catch {
      /* closed while listing */
    }
  }
  return n;
}

const guards: CpuLatencyGuard[] = [];
afterEach(() => {
  for (const g of guards.splice(0)) g.close();
});

describe('holdCpuLatency', () => {
  it('makes the kernel apply 0 µs while held and withdraws it on close', () => {
    expect(fs.existsSync(CPU_LATENCY_DEVICE), 'this kernel has no PM QoS device').toBe(true);
    const before = ourHolds();
    const hold = holdCpuLatency(0);
    expect(currentCpuLatency()).toBe(0);
    expect(ourHolds()).toBe(before + 1);
    hold.close();
    hold.close(); // idempotent
    expect(ourHolds()).toBe(before);
  });

  it('explains a missing device', () => {
    const missing = path.join(os.tmpdir(), 'no-such-pm-qos-device');
    expect(() => holdCpuLatency(0, missing)).toThrow(/does not exist \(kernel without PM QoS\)/);
  });

  it('explains a device that refuses the value', () => {
    // A directory opens for writing with EISDIR: the message names the device.
    expect(() => holdCpuLatency(0, os.tmpdir())).toThrow(/cannot hold a CPU wake-up latency/);
  });
});

/** A cpuidle current_driver file saying `driver`, in a directory of its own. */
function driverFile(driver: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpuidle-'));
  fs.mkdirSync(path.join(dir, 'cpuidle'));
  fs.writeFileSync(path.join(dir, 'cpuidle', 'current_driver'), `${driver}\n`);
  return path.join(dir, 'cpuidle', 'current_driver');
}
const haltpoll = driverFile('haltpoll');

// Before: a held request was reported as held and nothing more on a kernel without a
// cpuidle driver, where it changes nothing (measured there: 36.0 µs round trip without
// it, 35.7 µs with it), so a benchmark's reader took its latencies as the tuned ones.
describe('a request on a machine where it changes nothing', () => {
  it('is said to change nothing without a cpuidle driver, and nothing is said with one', () => {
    expect(requestWithoutEffect(haltpoll)).toBeNull();
    expect(requestWithoutEffect(driverFile('acpi_idle'))).toBeNull();
    expect(requestWithoutEffect(driverFile('none'))).toBe(
      'it changes nothing on this machine: the kernel has no CPU idle driver (cpuidle driver: none), so idle CPUs halt whatever is asked',
    );
    // no cpuidle directory under the CPUs at all: a kernel without CONFIG_CPU_IDLE
    const noCpuidle = path.join(path.dirname(path.dirname(haltpoll)), 'gone', 'current_driver');
    fs.mkdirSync(path.dirname(path.dirname(noCpuidle)), { recursive: true });
    expect(requestWithoutEffect(noCpuidle)).toMatch(/\(no cpuidle support\)/);
    // no /sys to ask: nothing is claimed
    expect(requestWithoutEffect('/no/such/sys/cpuidle/current_driver')).toBeNull();
  });

  it('is reported so by the guard, and in the notes of bench and probe', () => {
    const none = driverFile('none');
    const g = new CpuLatencyGuard({ mode: 'always', activity: () => 0, driverFile: none });
    guards.push(g);
    expect(g.status()).toMatchObject({ held: true, noEffect: requestWithoutEffect(none) });
    expect(heldNote('for the whole run', none)).toBe(
      `held at 0 µs for the whole run, but ${requestWithoutEffect(none)}`,
    );
    expect(heldNote('during the read test', haltpoll)).toBe('held at 0 µs during the read test');
  });
});

describe('CpuLatencyGuard', () => {
  function guard(mode: 'when-busy' | 'always' | 'off', device?: string, driverFile = haltpoll) {
    let io = 0;
    const changes: CpuLatencyStatus[] = [];
    const g = new CpuLatencyGuard({
      mode,
      activity: () => io,
      idleTicks: 3,
      driverFile,
      ...(device ? { device } : {}),
      onChange: (s) => changes.push(s),
    });
    guards.push(g);
    return { g, changes, io: (n = 1) => (io += n) };
  }

  it('when-busy: takes the request on I/O and lets go after the quiet ticks', () => {
    const base = ourHolds();
    const { g, io } = guard('when-busy');
    g.tick();
    expect(g.status().held).toBe(false); // no I/O yet
    io(5);
    g.tick();
    expect(g.status().held).toBe(true);
    expect(ourHolds()).toBe(base + 1);
    expect(currentCpuLatency()).toBe(0);
    g.tick();
    g.tick();
    expect(g.status().held).toBe(true); // two quiet ticks of three
    io();
    g.tick(); // I/O again: the count starts over
    g.tick();
    g.tick();
    expect(g.status().held).toBe(true);
    g.tick();
    expect(g.status().held).toBe(false);
    expect(ourHolds()).toBe(base);
  });

  it('always holds from the start; off releases; when-busy waits for I/O again', () => {
    const base = ourHolds();
    const { g, changes } = guard('always');
    expect(g.status()).toEqual({ mode: 'always', held: true, unavailable: null, noEffect: null });
    g.tick();
    g.tick();
    g.tick();
    g.tick();
    expect(g.status().held).toBe(true); // quiet ticks do not matter in 'always'
    g.setMode('off');
    expect(g.status().held).toBe(false);
    expect(ourHolds()).toBe(base);
    g.setMode('when-busy');
    g.tick();
    expect(g.status().held).toBe(false);
    expect(changes.map((c) => c.held)).toEqual([true, false]);
  });

  it('reports an unavailable device once, keeps serving, and retries on a mode change', () => {
    const missing = path.join(os.tmpdir(), 'no-such-pm-qos-device');
    const { g, changes, io } = guard('when-busy', missing);
    io();
    g.tick();
    io();
    g.tick();
    expect(g.status().held).toBe(false);
    expect(g.status().unavailable).toMatch(/does not exist/);
    expect(changes).toHaveLength(1);
    g.setMode('always');
    expect(changes).toHaveLength(2); // tried again, failed again, said so again
    expect(g.status().unavailable).toMatch(/does not exist/);
  });
});
