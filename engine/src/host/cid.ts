/**
 * Command identifiers and the queue-depth limit of one NVMe/TCP queue.
 *
 * A CID is a 12-bit tag (the slot the command occupies, < depth) plus a 4-bit
 * generation in bits 15:12, as Linux does. The generation changes every time a tag is
 * reused, so a late or duplicated completion for an earlier command in that slot is
 * recognised as stale instead of completing the wrong command. Targets must treat CIDs
 * as opaque; nothing here assumes they look inside.
 */
export const MAX_QUEUE_DEPTH = 4096;
const TAG_BITS = 12;
const TAG_MASK = (1 << TAG_BITS) - 1;

export class CidAllocator {
  /** Free tags as a stack: LIFO reuse keeps the hot slots' memory warm. */
  private readonly free: Uint16Array;
  private top: number;
  private readonly gen: Uint8Array;
  private readonly busy: Uint8Array;

  constructor(readonly depth: number) {
    if (!Number.isInteger(depth) || depth < 1 || depth > MAX_QUEUE_DEPTH) {
      throw new RangeError(`queue depth must be 1..${MAX_QUEUE_DEPTH}, got ${depth}`);
    }
    this.free = new Uint16Array(depth);
    for (let i = 0; i < depth; i++) this.free[i] = depth - 1 - i;
    this.top = depth;
    this.gen = new Uint8Array(depth);
    this.busy = new Uint8Array(depth);
  }

  /** Commands currently holding a CID. */
  get inUse(): number {
    return this.depth - this.top;
  }

  /** A fresh CID, or -1 when all `depth` tags are taken. */
  alloc(): number {
    if (this.top === 0) return -1;
    const tag = this.free[--this.top]!;
    const g = (this.gen[tag]! + 1) & 0xf;
    this.gen[tag] = g;
    this.busy[tag] = 1;
    return (g << TAG_BITS) | tag;
  }

  /** The slot index of a CID that is currently allocated, or -1 (unknown or stale). */
  lookup(cid: number): number {
    const tag = cid & TAG_MASK;
    if (tag >= this.depth || this.busy[tag] === 0) return -1;
    return cid >>> TAG_BITS === this.gen[tag] ? tag : -1;
  }

  /** Return a CID obtained from alloc(); throws on a double free (a bug). */
  release(cid: number): void {
    const tag = this.lookup(cid);
    if (tag < 0) throw new Error(`release of a CID not in use: 0x${cid.toString(16)}`);
    this.busy[tag] = 0;
    this.free[this.top++] = tag;
  }
}

/** Tag (slot index) of a CID. */
export const cidTag = (cid: number): number => cid & TAG_MASK;

/** What removeWhere() returns when it removes nothing. */
const NONE: readonly never[] = Object.freeze([]);

/**
 * FIFO of commands waiting for a free CID, bounded so a caller that submits without
 * limit gets an immediate 'busy' error instead of unbounded memory growth. A ring
 * buffer: push and shift are O(1) and allocate nothing once the ring has grown.
 */
export class WaitQueue<T> {
  private ring: (T | undefined)[] = new Array<T | undefined>(16);
  private head = 0;
  private count = 0;

  constructor(readonly limit: number) {}

  get length(): number {
    return this.count;
  }

  /** Append; false when the queue already holds `limit` items. */
  push(item: T): boolean {
    if (this.count >= this.limit) return false;
    if (this.count === this.ring.length) this.grow();
    this.ring[(this.head + this.count) % this.ring.length] = item;
    this.count++;
    return true;
  }

  /** The oldest item, or undefined when empty. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.ring[this.head];
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.ring.length;
    this.count--;
    return item;
  }

  /**
   * Remove and return the items `match` accepts, oldest first; the others keep their
   * order. In place: a scan that removes nothing allocates nothing.
   */
  removeWhere(match: (item: T) => boolean): readonly T[] {
    let out: T[] | null = null;
    const size = this.ring.length;
    let kept = 0;
    for (let i = 0; i < this.count; i++) {
      const item = this.ring[(this.head + i) % size]!;
      if (match(item)) (out ??= []).push(item);
      else this.ring[(this.head + kept++) % size] = item;
    }
    for (let i = kept; i < this.count; i++) this.ring[(this.head + i) % size] = undefined;
    this.count = kept;
    return out ?? NONE;
  }

  /** Remove and return everything, oldest first. */
  drain(): T[] {
    const out: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) out.push(item);
    return out;
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.ring.length * 2);
    for (let i = 0; i < this.count; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}
