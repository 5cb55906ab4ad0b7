/**
 * The seam between a transport (TCP, loop) and the core, in the shape of nvmet's
 * fabrics ops: the core never names a transport, a transport never interprets a
 * command beyond its data transfer.
 *
 * Flow per command: the transport parses a CapsuleCmd and calls CoreQueue.parse();
 * the core validates it (Parse, then execute, then one completion) and says how much
 * data moves which way. The transport gathers host-to-controller data (in-capsule or
 * via R2T/H2CData), calls exec(data, done), and turns done(...) into C2HData PDUs
 * (when readData is given) followed by a CapsuleResp.
 *
 * Status values are 15-bit NVMe status fields without the phase bit, as in the Linux
 * kernel's NVME_SC_* constants: (SCT << 8) | SC, plus DNR 0x4000 and MORE 0x2000.
 * The transport shifts them left by one into the CQE.
 */

/** A listening port as the discovery log describes it. */
export interface PortInfo {
  /** PORTID in the discovery log; unique per node. */
  readonly portId: number;
  readonly trtype: 'tcp' | 'loop';
  readonly adrfam: 'ipv4' | 'ipv6';
  /** Address to advertise; never 0.0.0.0 (the transport substitutes the local address). */
  readonly traddr: string;
  /** Service id (TCP port number as a decimal string). */
  readonly trsvcid: string;
}

/** What a transport provides to the core for one queue (one connection). */
export interface TransportQueue {
  /** The port this connection came in on, with traddr set to the address it reached. */
  readonly port: PortInfo;
  /** Remote endpoint, for logs and metrics ("127.0.0.1:51234"). */
  readonly peer: string;
  /** After a successful Connect: queue depth in entries (1's based). The transport refuses more outstanding commands. */
  setQueueSize(entries: number): void;
  /** Tear the connection down (keep-alive expiry, controller deletion, fatal error). Idempotent. */
  close(reason: string): void;
}

/**
 * Ends one command. dw0/dw1 go into the CQE; readData is sent as C2HData before the
 * CapsuleResp and must be exactly the parsed length on success.
 * Call exactly once.
 */
export type Completion = (status: number, dw0?: number, dw1?: number, readData?: Buffer) => void;

/** The data direction of a command, seen from the host. */
export type DataDirection = 'none' | 'h2c' | 'c2h';

export type ParseResult =
  /** Complete at once with this status (and dw0, e.g. Connect's invalid-parameter locator). */
  | { readonly kind: 'error'; readonly status: number; readonly dw0?: number }
  /**
   * Gather `length` bytes if h2c, then call exec; the core calls done exactly once.
   * For c2h, `data` may be a buffer of exactly `length` bytes that the transport offers
   * for the read data; a handler that fills it completes with that same buffer as
   * readData, and the transport then sends it without a copy. Handlers may ignore it.
   */
  | {
      readonly kind: 'exec';
      readonly dir: DataDirection;
      readonly length: number;
      exec(data: Buffer | null, done: Completion): void;
      /**
       * Called instead of exec when the transport answers the command itself (its data
       * failed a digest, and the host may retry it): undoes what parse set up.
       */
      readonly unused?: () => void;
    };

/** The core's side of one queue. */
export interface CoreQueue {
  /**
   * Validate one command. sqe is a 64-byte view that is valid only during this call
   * (the TCP transport reads the next chunk into the same memory): decode here what
   * exec will need. sglLength is the SGL descriptor's length. No side effects for
   * commands that end in 'error'.
   */
  parse(sqe: Buffer, sglLength: number): ParseResult;
  /** The connection is gone: release the queue (admin queue: delete the controller). */
  closed(): void;
  /** Whose queue it is, once Connect bound it to a controller (for logs and events). */
  owner(): QueueOwner | null;
}

/** The host, subsystem and queue a connection serves. */
export interface QueueOwner {
  readonly hostnqn: string;
  readonly subnqn: string;
  readonly cntlid: number;
  /** 0: the admin queue. */
  readonly qid: number;
}

/** The core's side of a whole target: one per node. */
export interface CoreTarget {
  /**
   * In-capsule data bytes per command the core announces (IOCCSZ in Identify
   * Controller): a transport must accept that much in a command capsule.
   */
  readonly inCapsuleBytes: number;
  /** A connection finished its ICReq/ICResp exchange and becomes a queue. */
  openQueue(tq: TransportQueue): CoreQueue;
}
