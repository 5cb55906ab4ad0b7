/** A typed API client for tests: the CLI's own Unix-socket client. */
export { connectSocket, type SocketClient } from '../../engine/src/cli/api-client.js';
import { ApiError } from '../../contract/api.js';

/** Awaits a call expected to fail; returns the ApiError. */
export async function apiError(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected the call to fail');
}
