/**
 * Reading an accepted connection into a buffer of our own.
 *
 * Why: Node reads every chunk of a socket into a fresh 64 KiB buffer (a `malloc`, then
 * a `realloc` down to what arrived), unless the socket was made with the `onread`
 * option, which reads into a buffer the caller gives and reuses. `net.connect` takes
 * that option; a server's sockets cannot be given it. So a server made with
 * `pauseOnConnect` (its sockets do not read yet) hands each one to readInto(), which
 * moves the connection's handle, and net.Server's count of it, into a socket made with
 * `onread` and drops the first socket object. The server's close() still waits for the
 * connection and getConnections() counts it. Measured on the 2-vCPU VM, 4 KiB random
 * reads at QD32 through the NVMe/TCP target: its CPU per read 5.4-5.6 → 5.0-5.2 µs.
 *
 * The chunk given to onChunk is a view of `rx`, valid only until onChunk returns: the
 * next read lands in the same memory. Whatever outlives the call must be copied. One
 * `rx` may serve every connection of the process: reads run one at a time on the event
 * loop, and none starts inside onChunk.
 *
 * This relies on things of Node's that its documentation does not promise: a socket's
 * `_handle` and `_server`, and `new Socket({ handle })`. Where one is missing (another
 * runtime, a later Node), the socket stays as it is and its 'data' events feed onChunk
 * instead, with Node's fresh buffers: slower, never wrong, and `reused` says which.
 */
import net, { type Socket } from 'node:net';

/** Node's own fields of a socket used here (lib/net.js). */
interface Internals {
  _handle?: object | null;
  _server?: net.Server | null;
  server?: net.Server | null;
}

/**
 * The buffer every server connection of this process reads into (the target's queues,
 * the benchmark's floor server): reads run one at a time on the event loop.
 */
export const SHARED_RX = Buffer.allocUnsafeSlow(64 * 1024);

export interface SocketInput {
  /** The socket to use from now on (the one given, when it could not be moved). */
  readonly socket: Socket;
  /** Chunks are read into `rx`; false: Node's fresh buffer per read. */
  readonly reused: boolean;
}

/**
 * Starts reading `socket` (accepted by a server with `pauseOnConnect: true`, not yet
 * read from) into `rx`, calling onChunk with each chunk read.
 */
export function readInto(
  socket: Socket,
  rx: Buffer,
  onChunk: (chunk: Buffer) => void,
): SocketInput {
  const internal = socket as unknown as Internals;
  const handle = internal._handle;
  if (handle && '_server' in internal && !socket.destroyed && socket.isPaused()) {
    let moved: Socket | null = null;
    try {
      moved = new net.Socket({
        handle,
        readable: true,
        writable: true,
        highWaterMark: socket.writableHighWaterMark, // the server's, as it gave `socket`
        onread: { buffer: rx, callback: (n: number) => (onChunk(rx.subarray(0, n)), true) },
      } as net.SocketConstructorOpts);
    } catch {
      moved = null;
    }
    if (moved) {
      // The handle is the new socket's now, and so is the server's count of it: the old
      // socket's destroy() closes nothing and uncounts nothing, the new one's will.
      const to = moved as unknown as Internals;
      to._server = internal._server;
      to.server = internal.server;
      internal._server = null;
      internal._handle = null;
      socket.destroy();
      moved.resume();
      return { socket: moved, reused: true };
    }
  }
  socket.on('data', onChunk);
  socket.resume();
  return { socket, reused: false };
}
