/**
 * NVMe and NVMe-oF numbers the core dispatches on: opcodes, fabrics command types,
 * CNS values, log page ids, feature ids, property offsets, async event encodings.
 * Names follow the spec (and the Linux kernel's nvme.h where they differ little).
 */

/** Admin command opcodes. */
export const ADMIN = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT: 0x0c,
  NS_MGMT: 0x0d,
  FW_COMMIT: 0x10,
  FW_DOWNLOAD: 0x11,
  NS_ATTACH: 0x15,
  KEEP_ALIVE: 0x18,
} as const;

/** NVM command set I/O opcodes. */
export const IO = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_UNCORRECTABLE: 0x04,
  COMPARE: 0x05,
  WRITE_ZEROES: 0x08,
  DSM: 0x09,
} as const;

/** The fabrics opcode; the command type sits in SQE byte 4 (fctype). */
export const FABRICS_OPCODE = 0x7f;

export const FCTYPE = {
  PROPERTY_SET: 0x00,
  CONNECT: 0x01,
  PROPERTY_GET: 0x04,
  AUTH_SEND: 0x05,
  AUTH_RECEIVE: 0x06,
  DISCONNECT: 0x08,
} as const;

/** Identify CNS values (cdw10 bits 7:0). */
export const CNS = {
  NS: 0x00,
  CTRL: 0x01,
  NS_ACTIVE_LIST: 0x02,
  NS_DESC_LIST: 0x03,
  CSI_NS: 0x05,
  CSI_CTRL: 0x06,
  CSI_NS_ACTIVE_LIST: 0x07,
  NS_CS_INDEP: 0x08,
} as const;

/** Log page identifiers (cdw10 bits 7:0). */
export const LID = {
  ERROR: 0x01,
  SMART: 0x02,
  FW_SLOT: 0x03,
  CHANGED_NS: 0x04,
  CMD_EFFECTS: 0x05,
  ANA: 0x0c,
  DISCOVERY: 0x70,
} as const;

/** Feature identifiers (cdw10 bits 7:0). */
export const FID = {
  ARBITRATION: 0x01,
  POWER_MGMT: 0x02,
  TEMP_THRESH: 0x04,
  ERR_RECOVERY: 0x05,
  VOLATILE_WC: 0x06,
  NUM_QUEUES: 0x07,
  IRQ_COALESCE: 0x08,
  WRITE_ATOMIC: 0x0a,
  ASYNC_EVENT: 0x0b,
  APST: 0x0c,
  TIMESTAMP: 0x0e,
  KATO: 0x0f,
  HOST_BEHAVIOR: 0x16,
  HOST_ID: 0x81,
} as const;

/** Controller property offsets (Property Get/Set OFFSET). */
export const PROP = {
  CAP: 0x00,
  VS: 0x08,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
} as const;

/** Bits of the AEN configuration / OAES that the core knows. */
export const AEN_BIT = {
  NS_ATTR: 8,
  FW_ACT: 9,
  ANA_CHANGE: 11,
  DISC_CHANGE: 31,
} as const;

/** AER completion dw0 values: type 2 (notice) | info << 8 | log page << 16. */
export const AEN_DW0 = {
  NS_CHANGED: 0x00040002,
  ANA_CHANGE: 0x000c0302,
  DISC_CHANGE: 0x0070f002,
} as const;

/** Namespace identification descriptor types (Identify CNS 3). */
export const NIDT = {
  EUI64: 1,
  NGUID: 2,
  UUID: 3,
  CSI: 4,
} as const;

/** The broadcast namespace id ("all namespaces"). */
export const NSID_ALL = 0xffffffff;

/** Connect's CNTLID meaning "allocate one for me" (dynamic controller model). */
export const CNTLID_DYNAMIC = 0xffff;

/** The well-known discovery subsystem NQN. */
export const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';

/** Sizes fixed by the spec. */
export const IDENTIFY_DATA_SIZE = 4096;
export const CONNECT_DATA_SIZE = 1024;
export const NQN_FIELD_SIZE = 256;
export const NQN_MAX_BYTES = 223;
