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
  holdCpuLatency,
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

describe('CpuLatencyGuard', () => {
  function guard(mode: 'when-busy' | 'always' | 'off', device?: string) {
    let io = 0;
    const changes: CpuLatencyStatus[] = [];
    const g = new CpuLatencyGuard({
      mode,
      activity: () => io,
      idleTicks: 3,
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
    expect(g.status()).toEqual({ mode: 'always', held: true, unavailable: null });
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
