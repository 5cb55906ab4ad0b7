/** The remote leg: the same loop through the NVMe/TCP host library, callback API, pooled requests. */
import { NvmeController, NvmeRequest, fillRw } from '../host/index.js';
import { IO } from '../protocol/opcodes.js';
import { statusName } from '../protocol/status.js';
import type { Submit } from './patterns.js';

export async function connectRemote(
  port: number,
  subnqn: string,
  queues: number,
): Promise<{ submit: Submit; close(): Promise<void> }> {
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port,
    subnqn,
    ioQueues: queues,
    queueSize: 128,
  });
  // connected already: closed again when namespace 1 cannot be had, before the error goes up
  const ns = await ctrl.namespace(1).catch(async (err: unknown) => {
    await ctrl.close();
    throw err;
  });
  const bs = ns.blockSize;
  const pool: NvmeRequest[] = [];
  const payloads = new Map<number, Buffer>();
  // Large reads land in a buffer each pooled request keeps (one per read in flight, as
  // the local leg and fio do), so no leg pays for fresh memory per read that another
  // does not. Smaller ones arrive whole in one socket read and are handed out as a
  // view of it: no allocation and no copy.
  const readBuffers = new Map<NvmeRequest, Buffer>();
  const finish = (req: NvmeRequest) => {
    const done = req.context as (err?: Error | null) => void;
    const err =
      req.error ?? (req.status ? new Error(`NVMe status ${statusName(req.status)}`) : null);
    req.context = null;
    pool.push(req);
    done(err);
  };
  const submit: Submit = (write, offset, len, queue, done) => {
    const req = (pool.pop() ?? new NvmeRequest()).reset();
    req.onDone = finish;
    req.context = done;
    fillRw(req, write ? IO.WRITE : IO.READ, 1, offset / bs, len / bs);
    if (write) {
      let data = payloads.get(len);
      if (!data) payloads.set(len, (data = Buffer.alloc(len, 0x3c)));
      req.dataOut = data;
    } else {
      req.readLength = len;
      if (len >= REUSE_READ_BUFFER_BYTES) {
        let into = readBuffers.get(req);
        if (into?.length !== len) readBuffers.set(req, (into = Buffer.allocUnsafe(len)));
        req.into = into;
      }
    }
    ctrl.submitIo(req, queue);
  };
  return { submit, close: () => ctrl.close() };
}

/** Reads of this size and up get a reused buffer: a socket read is 64 KiB at most here. */
const REUSE_READ_BUFFER_BYTES = 64 * 1024;
