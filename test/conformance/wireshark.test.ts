/**
 * Wireshark's own NVMe/TCP dissector over traffic captured on loopback between our host
 * library and `branchsan export`, with and without digests: every PDU type decodes, no
 * packet is malformed, and the dissector verifies our header and data digests. A
 * negative control flips one payload byte in the capture and expects a bad digest.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeController } from '../../engine/src/host/index.js';
import { BIN, tempDir } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

const tshark = spawnSync('tshark', ['-v'], { encoding: 'utf8' });
const missing =
  tshark.status === 0 ? null : 'tshark is not installed (scripts/setup.sh installs it)';
if (missing) console.warn(`SKIP Wireshark conformance: ${missing}`);

const NQN = 'nqn.2026-11.io.branchsan:wireshark';
const PATTERN = 0xa7;
let target: ChildProcess | undefined;
let port = 0;
const dir = tempDir();

function dissect(pcap: string, fields: string[], filter?: string): string[] {
  const args = ['-r', pcap, '-d', `tcp.port==${port},nvme-tcp`];
  args.push('-o', 'nvme-tcp.check_hdgst:TRUE', '-o', 'nvme-tcp.check_ddgst:TRUE');
  if (filter) args.push('-Y', filter);
  args.push('-T', 'fields', ...fields.flatMap((f) => ['-e', f]));
  const r = spawnSync('tshark', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tshark failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

async function capture(digests: boolean): Promise<string> {
  const pcap = path.join(dir, `nvme-${digests ? 'digests' : 'plain'}.pcap`);
  const cap = spawn('tshark', ['-i', 'lo', '-f', `tcp port ${port}`, '-w', pcap, '-q'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    cap.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('Capturing on')) resolve();
    });
    cap.once('exit', (code) => reject(new Error(`tshark exited ${code}: ${err}`)));
  });
  // "Capturing on" comes slightly before packets are really taken; the dissector must
  // see the ICReq to know the digests, so give the capture a moment
  await new Promise((r) => setTimeout(r, 1000));
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port,
    subnqn: NQN,
    hdgst: digests,
    ddgst: digests,
  });
  const ns = await ctrl.namespace(1);
  // in-capsule (4 KiB), R2T with one and several H2CData PDUs (32 KiB, 256 KiB), reads back
  for (const blocks of [8, 64, 512]) {
    const data = Buffer.alloc(blocks * 512, PATTERN);
    await ns.write(blocks, data);
    expect((await ns.read(blocks, blocks)).equals(data)).toBe(true);
  }
  await ns.flush();
  await ctrl.close();
  await new Promise((r) => setTimeout(r, 300));
  const exited = new Promise((r) => cap.once('exit', r));
  cap.kill('SIGINT');
  await exited;
  return pcap;
}

beforeAll(async () => {
  if (missing) return;
  port = await freePort();
  target = spawn(
    process.execPath,
    [
      BIN,
      'export',
      path.join(dir, 'vol.img'),
      '--create-size',
      '16M',
      '--port',
      String(port),
      '--nqn',
      NQN,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    target!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('nvme connect')) resolve();
    });
    target!.once('exit', (code) => reject(new Error(`export exited ${code}: ${out}`)));
  });
});

afterAll(async () => {
  if (target && target.exitCode === null) {
    const gone = new Promise((r) => target!.once('exit', r));
    target.kill('SIGTERM');
    await gone;
  }
});

describe.skipIf(missing !== null)("Wireshark's NVMe/TCP dissector", () => {
  it.each([false, true])('decodes every PDU, nothing malformed (digests %s)', async (digests) => {
    const pcap = await capture(digests);
    const types = new Set(
      dissect(pcap, ['nvme-tcp.type'])
        .flatMap((l) => l.split(','))
        .map(Number),
    );
    // ICReq, ICResp, CapsuleCmd, CapsuleResp, H2CData, C2HData, R2T
    for (const t of [0, 1, 4, 5, 6, 7, 9]) expect(types, `PDU type ${t}`).toContain(t);
    expect(dissect(pcap, ['frame.number'], '_ws.malformed')).toEqual([]);
    expect(
      dissect(pcap, ['frame.number'], 'nvme-tcp.hdgst.status == 0 || nvme-tcp.ddgst.status == 0'),
    ).toEqual([]);
    if (digests) {
      const good = dissect(
        pcap,
        ['frame.number'],
        'nvme-tcp.hdgst.status == 1 && nvme-tcp.ddgst.status == 1',
      );
      expect(good.length).toBeGreaterThan(4);
    }
  });

  it('negative control: one flipped payload byte is reported as a bad data digest', async () => {
    const pcap = await capture(true);
    const bytes = fs.readFileSync(pcap);
    const run = Buffer.alloc(64, PATTERN);
    const at = bytes.indexOf(run);
    expect(at).toBeGreaterThan(0);
    bytes[at + 10] = bytes[at + 10]! ^ 0xff;
    const bad = path.join(dir, 'flipped.pcap');
    fs.writeFileSync(bad, bytes);
    expect(dissect(bad, ['frame.number'], 'nvme-tcp.ddgst.status == 0').length).toBeGreaterThan(0);
  });
});
