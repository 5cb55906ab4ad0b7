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
  // Every read lands in a buffer its pooled request keeps, as the local leg reads into
  // one buffer per I/O in flight (and fio does): the host library then copies each
  // read's data once, from its receive buffer, as the local leg's pread does.
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
      let into = readBuffers.get(req);
      if (into?.length !== len) readBuffers.set(req, (into = Buffer.allocUnsafe(len)));
      req.into = into;
    }
    ctrl.submitIo(req, queue);
  };
  return { submit, close: () => ctrl.close() };
}
