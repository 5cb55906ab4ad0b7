/**
 * Per-connection limits of the TCP transport. The sizes the core must also know
 * (in-capsule size, MAXH2CDATA) are in protocol/tcp-limits.ts.
 */

/** ICReq must arrive this soon after the connection opens (Linux uses the same 10 s), and
 * Connect this soon after the ICResp. */
export const IC_TIMEOUT_MS = 10_000;

/**
 * Outstanding commands allowed before the core calls setQueueSize() (at Connect). Linux
 * sends nothing but the Connect until it completes; a small number bounds what an
 * unauthenticated peer can make us hold while leaving slack for other hosts.
 */
export const PRE_CONNECT_QUEUE_DEPTH = 8;

/**
 * Commands of one connection that may hold an R2T (and a gather buffer) at once; the
 * rest wait in arrival order. Together with R2T_BUDGET this bounds receive memory.
 */
export const MAX_ACTIVE_R2T = 16;

/**
 * Bytes of write data one connection may be gathering at once. A single command larger
 * than this still proceeds, alone (its size is bounded by the core's MDTS).
 */
export const R2T_BUDGET = 8 * 1024 * 1024;

/**
 * Bytes of read data one connection may hold at once: reads the backend is running plus
 * answers queued for a peer that is not taking them. Further reads wait, in arrival
 * order, until the peer reads or reads in progress end. Without it, a host that stops
 * reading got every read it had queued executed anyway: QD128 of 1 MiB reads (MDTS)
 * held 128 MiB per queue. A single read larger than this still proceeds, alone.
 */
export const READ_BUDGET = 8 * 1024 * 1024;

/**
 * Bytes of sent read frames one connection keeps for its next reads (PduWriter): a QD32
 * of 4 KiB reads needs about 130 KiB, a QD8 of 128 KiB reads 1 MiB. A connection without
 * a read for 30-60 s lets go of them (RecycledBuffers).
 */
export const FRAME_POOL_BYTES = 1024 * 1024;

/**
 * Bytes of answers queued for a peer that does not read them, beyond which no further
 * command of the chunk being parsed is taken in until they drain (the rest of the
 * chunk waits, unparsed). Without it one 64 KiB chunk of 1 MiB Get Log Page commands
 * made about 900 MiB of answers at once; a peer that reads holds nowhere near this.
 */
export const TX_HOLD_BYTES = 4 * 1024 * 1024;

/**
 * Connections one listener serves at once (TcpListenOptions.maxConnections); more are
 * closed as they arrive. Each costs a descriptor: without a cap a peer that keeps
 * discovery connections alive could use them all (the unit allows 65536) and leave
 * none for hosts, the database and the volumes. A host opens one per I/O queue plus
 * one per controller: 4096 serves dozens of hosts with many queues each.
 */
export const MAX_CONNECTIONS = 4096;

/**
 * Connections from one remote address that have not connected a queue of an NVM
 * subsystem: before their Connect, or connected to discovery, which any host may open
 * (TcpListenOptions.maxPendingPerAddress). More from that address are closed as they
 * arrive, so one peer cannot fill MAX_CONNECTIONS and lock the allowed hosts out. A
 * Linux host opens its I/O queue connections before it connects them: one controller
 * has at most 1 + granted queues (8) of them, so this leaves room for several hosts
 * behind one NAT address connecting at once.
 */
export const MAX_PENDING_PER_ADDRESS = 64;

/** Socket buffer high water mark: beyond it we stop reading until 'drain'. */
export const SOCKET_HIGH_WATER_MARK = 256 * 1024;

/** After a TermReq or close(), how long to wait for the peer to close before destroying. */
export const LINGER_MS = 2_000;
