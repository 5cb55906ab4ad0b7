/**
 * The multipath test rig: two real in-process Targets that present the same subsystem
 * and namespace (same NQN, NSID, NGUID, UUID) over the SAME MemoryBackend object, a
 * stand-in for a synchronously mirrored pair. Distinct CNTLID ranges, one TCP port each,
 * ANA optimized on A and non-optimized on B, real sockets on 127.0.0.1; a pausable TCP
 * proxy stands in front of a node where a path must stall. Tests call runCleanup() in
 * afterEach.
 */
import net from 'node:net';
import { Target, type AnaState, type TargetOptions } from '../../../engine/src/core/index.js';
import {
  MultipathNamespace,
  type MultipathOptions,
  type PathInfo,
  type PathOptions,
} from '../../../engine/src/host/index.js';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import type { TcpTransport } from '../../../engine/src/transport/tcp/index.js';
import { serveOnLoopback } from '../../helpers/target.js';
import { overBackend } from '../../helpers/backend.js';

export const NQN = 'nqn.2024-01.io.branchsan:multipath-test';
export const NGUID = '0123456789abcdef0123456789abcdef';
export const UUID = '5a1e0000-1111-4222-8333-444455556666';
export const BS = 4096;

export interface Node {
  readonly name: string;
  readonly target: Target;
  readonly transport: TcpTransport;
  readonly port: number;
  /** Byte offsets of writes that reached this node's backend, in order. */
  readonly writes: number[];
  /** Byte offsets of reads that reached this node's backend, in order. */
  readonly reads: number[];
  stop(): Promise<void>;
}

/** Teardown steps of the current test, run in reverse by runCleanup() (afterEach). */
export const cleanup: (() => Promise<unknown>)[] = [];
export async function runCleanup(): Promise<void> {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
}

/** Records the offsets of reads and writes that reach a backend through one node. */
export function spy(b: BlockBackend, writes: number[], reads: number[] = []): BlockBackend {
  return overBackend(b, {
    read: (o, l, cb, into) => {
      reads.push(o);
      b.read(o, l, cb, into);
    },
    write: (o, d, f, cb) => {
      writes.push(o);
      b.write(o, d, f, cb);
    },
    close: () => Promise.resolve(), // the backend is the node's, closed by its test
  });
}

export async function startNode(
  name: string,
  backend: BlockBackend,
  ana: AnaState,
  cntlid: [number, number],
  nguid = NGUID,
  anatt = 10,
  more: Partial<TargetOptions> = {},
): Promise<Node> {
  const target = new Target({
    cntlidMin: cntlid[0],
    cntlidMax: cntlid[1],
    inCapsuleBytes: 16384,
    anatt,
    ...more,
  });
  target.addSubsystem({ nqn: NQN, serial: 'MPATH0001', model: 'BranchSAN', allowAnyHost: true });
  const writes: number[] = [];
  const reads: number[] = [];
  target.addNamespace(NQN, { nsid: 1, backend: spy(backend, writes, reads), nguid, uuid: UUID });
  target.setAnaState(1, ana);
  const { transport, port } = await serveOnLoopback(target);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    target.close();
    await transport.close();
  };
  cleanup.push(stop);
  return { name, target, transport, port, writes, reads, stop };
}

/** Two nodes over one backend: A optimized (CNTLIDs 1..0x7FFF), B non-optimized. */
export async function startPair(nguidB = NGUID, anattA = 10) {
  const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
  const a = await startNode('A', backend, 'optimized', [1, 0x7fff], NGUID, anattA);
  const b = await startNode('B', backend, 'non-optimized', [0x8000, 0xffef], nguidB);
  return { backend, a, b };
}

export function pathTo(n: Node, port = n.port, extra: Partial<PathOptions> = {}): PathOptions {
  return {
    host: '127.0.0.1',
    port,
    subnqn: NQN,
    name: n.name,
    ioQueues: 2,
    queueSize: 32,
    ...extra,
  };
}

export async function open(opts: MultipathOptions): Promise<MultipathNamespace> {
  const mp = await MultipathNamespace.connect(opts);
  cleanup.push(() => mp.close());
  return mp;
}

export const byName = (mp: MultipathNamespace, name: string): PathInfo =>
  mp.paths().find((p) => p.name === name)!;

export async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A TCP proxy that can stop forwarding, like a node whose process is stopped: bytes
 * sent to it sit unread, new connections are refused. resume() drops the stalled
 * connections (their bytes never arrive) and forwards new ones again.
 */
export class PausableProxy {
  private paused = false;
  private stallOn: ((chunk: Buffer) => boolean) | null = null;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private readonly stalled = new Set<[net.Socket, net.Socket]>();
  private readonly partitioned: { upstream: net.Socket; held: Buffer[] }[] = [];
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** A proxy to `targetPort`, listening on `listenPort` (0: a free one). */
  static async start(targetPort: number, listenPort = 0): Promise<PausableProxy> {
    let proxy: PausableProxy | null = null;
    const server = net.createServer((client) => proxy!.accept(client, targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject).listen(listenPort, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    proxy = new PausableProxy(server, (server.address() as net.AddressInfo).port);
    cleanup.push(() => proxy!.close());
    return proxy;
  }

  private accept(client: net.Socket, targetPort: number): void {
    if (this.paused) return void client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    // After pipe's own listener: the chunk is on its way to the target when this stalls.
    client.on('data', (chunk: Buffer) => {
      if (!this.stallOn?.(chunk)) return;
      this.stallOn = null;
      this.stall();
    });
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  }

  pause(): void {
    this.paused = true;
    for (const [c, u] of this.pairs) {
      c.unpipe(u);
      u.unpipe(c);
      c.pause();
      u.pause();
    }
  }

  /**
   * Hold what the target sends on the connections open now (they stay open, and what
   * the host sends still arrives), until unstall() lets it through.
   */
  stall(): void {
    for (const pair of this.pairs) {
      const [c, u] = pair;
      u.unpipe(c);
      u.pause();
      this.stalled.add(pair);
    }
  }

  /**
   * Hold what the host sends on the connections open now (they stay open, and what the
   * target sends still arrives), until release() lets it through.
   */
  hold(): void {
    for (const [c, u] of this.pairs) {
      c.unpipe(u);
      c.pause();
    }
  }

  release(): void {
    for (const [c, u] of this.pairs) {
      c.pipe(u);
      c.resume();
    }
  }

  /** stall() once the host sends a chunk `match` accepts (that chunk still goes through). */
  stallWhen(match: (chunk: Buffer) => boolean): void {
    this.stallOn = match;
  }

  /** Let through what stall() held (connections opened since were never held: piping
   * them again would deliver their bytes twice). */
  unstall(): void {
    for (const pair of this.stalled) {
      const [c, u] = pair;
      u.pipe(c);
      u.resume();
    }
    this.stalled.clear();
  }

  /**
   * A partition of the connections open now, and of nothing else (a middlebox that lost
   * their state, a flapping link): the host's bytes on them reach neither the target nor
   * stop, and the target never sees them close, while new connections pass as before.
   * heal() hands the held bytes to the target on those old connections, as the host's
   * kernel retransmitting them would once the link is back.
   */
  partition(): void {
    for (const pair of [...this.pairs]) {
      const [c, u] = pair;
      this.pairs.delete(pair);
      c.unpipe(u);
      u.unpipe(c);
      c.removeAllListeners('close')
        .removeAllListeners('error')
        .on('error', () => {});
      u.removeAllListeners('close')
        .removeAllListeners('error')
        .on('error', () => {});
      const held: Buffer[] = [];
      // unpipe() paused the client side: without resume() no 'data' would ever come, and
      // nothing would be held to deliver late.
      c.on('data', (d: Buffer) => held.push(d)).resume();
      u.resume(); // what the target sends is lost
      this.partitioned.push({ upstream: u, held });
    }
  }

  /** Bytes the host sent on partitioned connections that heal() has yet to deliver. */
  heldBytes(): number {
    return this.partitioned.reduce((n, p) => n + p.held.reduce((m, d) => m + d.length, 0), 0);
  }

  heal(): void {
    for (const { upstream, held } of this.partitioned.splice(0)) {
      for (const d of held) upstream.write(d);
      cleanup.push(async () => void upstream.destroy());
    }
  }

  resume(): void {
    this.paused = false;
    for (const [c, u] of this.pairs) {
      c.destroy();
      u.destroy();
    }
  }

  async close(): Promise<void> {
    this.resume();
    await new Promise((r) => this.server.close(r));
  }
}

/** Does `chunk` (whole PDUs from the host) hold an Identify command with this CNS? */
export function sendsIdentify(chunk: Buffer, cns: number): boolean {
  for (let off = 0; off + 8 <= chunk.length; off += chunk.readUInt32LE(off + 4) || chunk.length) {
    // CapsuleCmd (type 4): the SQE starts at byte 8; opcode 0x06 Identify, CNS in CDW10.
    if (chunk[off] === 4 && chunk[off + 8] === 0x06 && chunk[off + 48] === cns) return true;
  }
  return false;
}
