/**
 * Serves an in-process Target on 127.0.0.1 over NVMe/TCP and registers the port in its
 * discovery log, as the engine's service does for a configured port.
 */
import type { Target } from '../../engine/src/core/index.js';
import {
  listenTcp,
  type TcpListenOptions,
  type TcpTransport,
} from '../../engine/src/transport/tcp/index.js';

export async function serveOnLoopback(
  target: Target,
  opts: Partial<Omit<TcpListenOptions, 'host'>> = {},
): Promise<{ transport: TcpTransport; port: number }> {
  const portId = opts.portId ?? 1;
  const transport = await listenTcp(
    { ...opts, host: '127.0.0.1', port: opts.port ?? 0, portId },
    target,
  );
  const port = transport.address().port;
  target.addPort({
    portId,
    trtype: 'tcp',
    adrfam: 'ipv4',
    traddr: '127.0.0.1',
    trsvcid: String(port),
  });
  return { transport, port };
}
