/**
 * NVMe status values as used across the engine: (SCT << 8) | SC, plus DNR/MORE bits,
 * the same encoding as the Linux kernel's NVME_SC_* constants (the CQE status field
 * is this value shifted left by one, phase bit 0).
 */
export const DNR = 0x4000;
export const MORE = 0x2000;

export const SC = {
  SUCCESS: 0x000,
  INVALID_OPCODE: 0x001,
  INVALID_FIELD: 0x002,
  DATA_XFER_ERROR: 0x004,
  INTERNAL: 0x006,
  ABORT_REQ: 0x007,
  ABORT_QUEUE: 0x008,
  INVALID_NS: 0x00b,
  CMD_SEQ_ERROR: 0x00c,
  SGL_INVALID_DATA_LEN: 0x00f,
  SGL_INVALID_TYPE: 0x011,
  SGL_INVALID_OFFSET: 0x016,
  KA_TIMEOUT_EXPIRED: 0x019,
  KA_TIMEOUT_INVALID: 0x01a,
  NS_WRITE_PROTECTED: 0x020,
  TRANSIENT_TR_ERR: 0x022,
  LBA_RANGE: 0x080,
  CAP_EXCEEDED: 0x081,
  NS_NOT_READY: 0x082,
  // command specific (SCT 1)
  INVALID_QID: 0x101,
  QUEUE_SIZE: 0x102,
  ABORT_LIMIT: 0x103,
  AER_LIMIT: 0x105,
  INVALID_LOG_PAGE: 0x109,
  CONNECT_FORMAT: 0x180,
  CONNECT_CTRL_BUSY: 0x181,
  CONNECT_INVALID_PARAM: 0x182,
  CONNECT_RESTART_DISC: 0x183,
  CONNECT_INVALID_HOST: 0x184,
  DISCOVERY_RESTART: 0x190,
  AUTH_REQUIRED: 0x191,
  // media errors (SCT 2)
  WRITE_FAULT: 0x280,
  READ_ERROR: 0x281,
  COMPARE_FAILED: 0x285,
  ACCESS_DENIED: 0x286,
  // path related (SCT 3)
  INTERNAL_PATH_ERROR: 0x300,
  ANA_PERSISTENT_LOSS: 0x301,
  ANA_INACCESSIBLE: 0x302,
  ANA_TRANSITION: 0x303,
} as const;

/** Status Code Type of a status value. */
export function statusType(status: number): number {
  return (status >> 8) & 0x7;
}

/** Human-readable name for logs and errors ("LBA_RANGE|DNR"). */
export function statusName(status: number): string {
  const base = status & 0x7ff;
  const name = Object.entries(SC).find(([, v]) => v === base)?.[0] ?? `0x${base.toString(16)}`;
  return (status & DNR ? `${name}|DNR` : name) + (status & MORE ? '|MORE' : '');
}
