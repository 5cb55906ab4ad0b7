/**
 * The NVMe/TCP listener of the target: one per port. Each accepted connection becomes a
 * TcpQueue; the core sees it once its IC exchange is done (CoreTarget.openQueue).
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import type { CoreTarget, PortInfo } from '../../core/seam.js';
import { createLogger, type Logger } from '../../util/log.js';
import { DISCOVERY_NQN } from '../../protocol/opcodes.js';
import { MAX_CONNECTIONS, MAX_PENDING_PER_ADDRESS, SOCKET_HIGH_WATER_MARK } from './limits.js';
import { TcpQueue, type TcpQueueInfo, type TcpQueueOptions } from './queue.js';

export interface TcpListenOptions extends TcpQueueOptions {
  /** Address to bind ('0.0.0.0', '::', or one interface address). */
  readonly host: string;
  /** TCP port; 0 picks a free one (tests). */
  readonly port: number;
  /** PORTID reported in the discovery log. */
  readonly portId: number;
  /** Connections served at once; more are closed on arrival (default MAX_CONNECTIONS). */
  readonly maxConnections?: number;
  /** Of them, per remote address, not connected to an NVM subsystem (MAX_PENDING_PER_ADDRESS). */
  readonly maxPendingPerAddress?: number;
  readonly log?: Logger;
}

export class TcpTransport {
  private readonly queues = new Set<TcpQueue>();
  private readonly log: Logger;
  /** When a refused connection was last logged (one line per 10 s at most). */
  private refusedLoggedAt = 0;
  private refusedSince = 0;
  /** Per remote address: its connections not (yet) connected to an NVM subsystem. */
  private readonly pending = new Map<string, number>();
  /** When a connection refused for its address's pending ones was last logged. */
  private pendingLoggedAt = 0;
  private pendingRefusedSince = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly opts: TcpListenOptions,
    private readonly core: CoreTarget,
  ) {
    this.log = opts.log ?? createLogger({ level: 'error', sink: { write: () => {} } });
    server.on('connection', (socket) => this.accept(socket));
  }

  /** Bind and listen; resolves once the port is open. */
  static listen(opts: TcpListenOptions, core: CoreTarget): Promise<TcpTransport> {
    const server = net.createServer({
      noDelay: true, // PDUs are already batched per turn; Nagle would only add latency
      highWaterMark: SOCKET_HIGH_WATER_MARK,
      // A TcpQueue reads its socket into memory of its own (util/socket-input.ts), which
      // needs a socket that has not begun reading.
      pauseOnConnect: true,
    });
    const transport = new TcpTransport(server, opts, core);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.off('error', reject);
        // Only now: a failed listen is the caller's error to report, not a log line too.
        server.on('error', (err) => transport.log.error('listener error', { err }));
        resolve(transport);
      });
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Snapshots of the live connections (metrics, tests). */
  connections(): TcpQueueInfo[] {
    return [...this.queues].map((q) => q.info());
  }

  /**
   * Graceful stop, first half: accept no new connections, refuse new commands, and
   * resolve when the commands in flight have completed (or after timeoutMs). Commands a
   * host had already sent when the refusal began arrive a moment later; the settle wait
   * answers them too (with the refusal), so none is cut off unanswered by close(). The
   * refusal starts synchronously, before this returns.
   */
  async drain(timeoutMs: number, settleMs = 100): Promise<void> {
    if (this.server.listening) this.server.close();
    const deadline = Date.now() + timeoutMs;
    const idle = () => Promise.all([...this.queues].map((q) => q.drain()));
    await untilOrTimeout(idle(), deadline);
    await untilOrTimeout(new Promise((r) => setTimeout(r, settleMs)), deadline);
    await untilOrTimeout(idle(), deadline);
  }

  /** Stop listening and close every connection; resolves when the listener is closed. */
  close(): Promise<void> {
    for (const q of this.queues) q.close('transport closing');
    if (!this.server.listening) return Promise.resolve();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const max = this.opts.maxConnections ?? MAX_CONNECTIONS;
    if (this.queues.size >= max) {
      this.refusedSince++;
      const now = Date.now();
      if (now - this.refusedLoggedAt >= 10_000) {
        this.log.warn('connection limit reached: new connections are closed', {
          port: this.opts.port,
          limit: max,
          refused: this.refusedSince,
          peer: `${socket.remoteAddress}:${socket.remotePort}`,
        });
        this.refusedLoggedAt = now;
        this.refusedSince = 0;
      }
      socket.destroy();
      return;
    }
    const address = socket.remoteAddress ?? '';
    const pending = this.pending.get(address) ?? 0;
    const maxPending = this.opts.maxPendingPerAddress ?? MAX_PENDING_PER_ADDRESS;
    if (pending >= maxPending) {
      this.pendingRefusedSince++;
      const now = Date.now();
      if (now - this.pendingLoggedAt >= 10_000) {
        this.log.warn(
          `${address} has ${pending} connections without a connected NVM subsystem queue (before Connect, or discovery): its new connections are closed`,
          { port: this.opts.port, address, limit: maxPending, refused: this.pendingRefusedSince },
        );
        this.pendingLoggedAt = now;
        this.pendingRefusedSince = 0;
      }
      socket.destroy();
      return;
    }
    try {
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      const q = new TcpQueue(socket, this.portInfo(socket), peer, this.core, this.log, this.opts);
      this.queues.add(q);
      this.pending.set(address, pending + 1);
      let counted = true;
      const settle = (): void => {
        if (!counted) return;
        counted = false;
        const n = (this.pending.get(address) ?? 1) - 1;
        if (n > 0) this.pending.set(address, n);
        else this.pending.delete(address);
      };
      q.onConnected = () => {
        const owner = q.owner();
        if (owner && owner.subnqn !== DISCOVERY_NQN) settle();
      };
      q.onClosed = () => {
        this.queues.delete(q);
        settle();
      };
    } catch (err) {
      this.log.error('cannot accept connection', { err });
      socket.destroy();
    }
  }

  /** PortInfo with the address this connection reached (never 0.0.0.0). */
  private portInfo(socket: Socket): PortInfo {
    let traddr = socket.localAddress ?? '';
    let ipv6 = socket.localFamily === 'IPv6';
    if (ipv6 && traddr.startsWith('::ffff:') && traddr.includes('.')) {
      traddr = traddr.slice(7); // an IPv4 client on a dual-stack listener
      ipv6 = false;
    }
    return {
      portId: this.opts.portId,
      trtype: 'tcp',
      adrfam: ipv6 ? 'ipv6' : 'ipv4',
      traddr,
      trsvcid: String(socket.localPort ?? this.opts.port),
    };
  }
}

/** Listen for NVMe/TCP on host:port and serve the connections with `core`. */
export function listenTcp(opts: TcpListenOptions, core: CoreTarget): Promise<TcpTransport> {
  return TcpTransport.listen(opts, core);
}

/** Waits for p, but not past deadline (ms since epoch). */
async function untilOrTimeout(p: Promise<unknown>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
  });
  await Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
