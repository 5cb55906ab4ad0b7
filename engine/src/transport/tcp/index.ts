/** The NVMe/TCP transport of the target. */
export { listenTcp, TcpTransport, type TcpListenOptions } from './listener.js';
export type { TcpQueueInfo, TcpQueueOptions, TcpQueueState } from './queue.js';
export * from './limits.js';
