/**
 * Keeps the CPUs out of idle states that are slow to leave while the target is busy,
 * through the kernel's PM QoS interface: while a process holds /dev/cpu_dma_latency
 * open with a value of N µs written to it, no CPU enters an idle state whose exit
 * latency exceeds N. This is what tuned's latency-performance profile does, and what
 * storage appliances do for their I/O paths.
 *
 * Why it matters for NVMe/TCP: every I/O wakes a sleeping thread or process a few
 * times (host, target, storage thread). Each wake-up of an idle CPU pays the idle
 * state's exit latency; in a VM that is a halt and a trip through the hypervisor.
 * Measured on the 2-vCPU development VM (haltpoll idle driver), a bare loopback TCP
 * round trip between two Node processes: 104 µs mean with the CPUs allowed to halt,
 * 30 µs with a 0 µs request held (see the issue note and `branchsan bench`).
 *
 * The request reaches the idle states only through a cpuidle driver. A kernel without
 * one (a minimal VM kernel: cpuidle's current_driver says "none") halts an idle CPU
 * whatever is asked: measured on such a VM, 36.0 µs without and 35.7 µs with the
 * request. requestWithoutEffect() says so, and status, bench and probe pass it on.
 *
 * The price is power: an idle CPU spins instead of sleeping. So the default mode,
 * 'when-busy', holds the request only while I/O flows and lets go after a quiet
 * spell; 'always' holds it while the engine runs; 'off' never asks.
 */
import fs from 'node:fs';
import path from 'node:path';

export type CpuLatencyMode = 'when-busy' | 'always' | 'off';

export const CPU_LATENCY_DEVICE = '/dev/cpu_dma_latency';
export const CPUIDLE_DRIVER_FILE = '/sys/devices/system/cpu/cpuidle/current_driver';

/**
 * Why a wake-up latency request changes nothing on this machine, or null when it can
 * (a cpuidle driver is loaded) or that cannot be told (no /sys/devices/system/cpu).
 */
export function requestWithoutEffect(driverFile = CPUIDLE_DRIVER_FILE): string | null {
  let driver: string;
  try {
    driver = fs.readFileSync(driverFile, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return null;
    // no cpuidle directory at all (CONFIG_CPU_IDLE off), as far as the CPUs are listed
    if (!fs.existsSync(path.dirname(path.dirname(driverFile)))) return null;
    driver = '';
  }
  if (driver !== '' && driver !== 'none') return null;
  return (
    `it changes nothing on this machine: the kernel has no CPU idle driver ` +
    `(${driver === '' ? 'no cpuidle support' : 'cpuidle driver: none'}), so idle CPUs halt whatever is asked`
  );
}

/**
 * How a report says that a 0 µs request is held `when` (e.g. "for the whole run"), and,
 * where that is so, that it changes nothing here.
 */
export function heldNote(when: string, driverFile = CPUIDLE_DRIVER_FILE): string {
  const noEffect = requestWithoutEffect(driverFile);
  return `held at 0 µs ${when}${noEffect ? `, but ${noEffect}` : ''}`;
}

/** An open PM QoS request; close() withdraws it (so does the process exiting). */
export interface CpuLatencyHold {
  readonly us: number;
  close(): void;
}

/**
 * Asks the kernel that no CPU wakes slower than `us` µs while the hold is open.
 * Throws an Error that says what to do when the device is missing or not writable.
 */
export function holdCpuLatency(us = 0, device = CPU_LATENCY_DEVICE): CpuLatencyHold {
  let fd: number;
  try {
    fd = fs.openSync(device, fs.constants.O_WRONLY); // never O_CREAT: a typo must not make a file
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? `${device} does not exist (kernel without PM QoS)`
        : e.code === 'EACCES' || e.code === 'EPERM'
          ? `${device} is writable only by root`
          : `${device}: ${e.message}`;
    throw new Error(`cannot hold a CPU wake-up latency request: ${why}`, { cause: err });
  }
  try {
    const value = Buffer.alloc(4);
    value.writeInt32LE(us, 0);
    fs.writeSync(fd, value);
  } catch (err) {
    fs.closeSync(fd);
    throw new Error(
      `cannot hold a CPU wake-up latency request: ${device} refused ${us} µs: ${(err as Error).message}`,
      { cause: err },
    );
  }
  let open = true;
  return {
    us,
    close() {
      if (!open) return;
      open = false;
      fs.closeSync(fd);
    },
  };
}

/** The effective request the kernel applies now, in µs (reading the device reports it). */
export function currentCpuLatency(device = CPU_LATENCY_DEVICE): number {
  const fd = fs.openSync(device, 'r');
  try {
    const buf = Buffer.alloc(4);
    fs.readSync(fd, buf, 0, 4, null);
    return buf.readInt32LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

export interface CpuLatencyStatus {
  mode: CpuLatencyMode;
  held: boolean;
  /** Why the request could not be made, once it failed; null while it works. */
  unavailable: string | null;
  /** Why holding it changes nothing on this machine (requestWithoutEffect), or null. */
  noEffect: string | null;
}

export interface CpuLatencyGuardOptions {
  mode: CpuLatencyMode;
  /** A counter that grows with every I/O (completed commands); read once per tick. */
  activity: () => number;
  /** Ticks without I/O after which 'when-busy' lets go. */
  idleTicks?: number;
  device?: string;
  /** cpuidle's current_driver file (CPUIDLE_DRIVER_FILE; tests point elsewhere). */
  driverFile?: string;
  /** Told once when the request cannot be made, and each time it is taken or released. */
  onChange?: (status: CpuLatencyStatus) => void;
}

/**
 * Applies a mode. The owner calls tick() on a timer (the engine: once a second); a tick
 * that sees new I/O takes the request, `idleTicks` quiet ticks in a row release it.
 * A failure to take it is reported once and not retried until the mode changes.
 */
export class CpuLatencyGuard {
  private mode: CpuLatencyMode;
  private hold: CpuLatencyHold | null = null;
  private unavailable: string | null = null;
  private lastActivity: number;
  private quiet = 0;
  private readonly noEffect: string | null;

  constructor(private readonly o: CpuLatencyGuardOptions) {
    this.mode = o.mode;
    this.noEffect = requestWithoutEffect(o.driverFile);
    this.lastActivity = o.activity();
    if (this.mode === 'always') this.take();
  }

  status(): CpuLatencyStatus {
    return {
      mode: this.mode,
      held: this.hold !== null,
      unavailable: this.unavailable,
      noEffect: this.noEffect,
    };
  }

  setMode(mode: CpuLatencyMode): void {
    if (mode === this.mode) return;
    this.mode = mode;
    this.unavailable = null; // a new mode tries again
    this.quiet = 0;
    if (mode === 'always') this.take();
    else if (mode === 'off') this.release();
  }

  tick(): void {
    const now = this.o.activity();
    const busy = now !== this.lastActivity;
    this.lastActivity = now;
    if (this.mode !== 'when-busy') return;
    if (busy) {
      this.quiet = 0;
      this.take();
    } else if (this.hold && ++this.quiet >= (this.o.idleTicks ?? 30)) {
      this.release();
    }
  }

  close(): void {
    this.release();
  }

  private take(): void {
    if (this.hold || this.unavailable) return;
    try {
      this.hold = holdCpuLatency(0, this.o.device);
    } catch (err) {
      this.unavailable = (err as Error).message;
    }
    this.o.onChange?.(this.status());
  }

  private release(): void {
    if (!this.hold) return;
    this.hold.close();
    this.hold = null;
    this.o.onChange?.(this.status());
  }
}
