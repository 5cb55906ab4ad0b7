/**
 * Sizes our NVMe/TCP target announces. They live in the protocol layer because the core
 * reports them too (IOCCSZ in Identify Controller) and the core never imports a transport.
 */

/**
 * In-capsule data the target accepts per command by default (TargetOptions.inCapsuleBytes,
 * which the core announces as IOCCSZ and the TCP transport enforces). Linux sends writes
 * up to IOCCSZ*16-64 bytes in the CapsuleCmd, which saves the R2T round trip (about one
 * loopback RTT, 30 µs here) for small writes. 16 KiB covers 4 and 8 KiB writes, the
 * 4096-byte DSM range buffer and the 8 KiB the Linux host sends in-capsule on the admin
 * queue whatever IOCCSZ says; nvmet's default is the same. The price is at most
 * queue-depth x 16 KiB of pinned receive buffers per queue. A CapsuleCmd carrying more
 * in-capsule data than the target accepts ends its connection with a C2HTermReq (FES 5,
 * Data Transfer Limit Exceeded), as soon as its header is in.
 */
export const IN_CAPSULE_DATA_SIZE = 16384;

/**
 * In-capsule data the TCP transport accepts on every queue whatever IOCCSZ says: the
 * Linux host sends the data of admin-queue and fabrics commands (Connect's 1 KiB) in the
 * capsule up to 8 KiB without looking at IOCCSZ.
 */
export const MIN_IN_CAPSULE_DATA_SIZE = 8192;

/** IORCSZ for Identify Controller: a response capsule is the bare 16-byte CQE. */
export const IORCSZ = 1;

/**
 * MAXH2CDATA announced in ICResp: the largest H2CData PDU the host may send. Linux
 * requires >= 4096 and a multiple of 4. 128 KiB (SPDK's value) lets common writes
 * up to 128 KiB arrive in one H2CData PDU, which we then pass to the core without a
 * gather copy, while bounding the one partially received PDU a queue buffers.
 */
export const MAXH2CDATA = 128 * 1024;

/**
 * Largest DATAL in a C2HData PDU we send. Splitting reads costs one 24-byte header per
 * piece (no copy: the pieces are views), and it keeps a receiver's partial-PDU buffer
 * (our own host library's parser included) at the same 128 KiB bound as MAXH2CDATA.
 */
export const MAX_C2H_DATA = 128 * 1024;
