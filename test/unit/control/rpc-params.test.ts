/**
 * The dispatcher's refusal of params that do not fit the contract names the field and
 * what it takes, for every kind of field: here those of a few allowed numbers, which
 * read "Invalid input." and nothing else before, as did a value of one of several shapes.
 */
import { describe, expect, it } from 'vitest';
import { ApiError, ErrorCode } from '../../../contract/errors.js';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { createLogger } from '../../../engine/src/util/log.js';

const rpc = new RpcDispatcher({} as Handlers, createLogger({ sink: { write: () => undefined } }));

async function refusal(method: string, params: unknown): Promise<ApiError> {
  const text = JSON.stringify({ jsonrpc: '2.0', id: 1, method, params });
  const reply = JSON.parse(
    await rpc.handle(text, { transport: 'socket', peer: 'test', actor: 'test' }),
  ) as { error: { code: number; message: string; data?: { field?: string } } };
  return new ApiError(reply.error.code as ErrorCode, reply.error.message, reply.error.data);
}

describe('API params refused by the contract', () => {
  it('a block size or hash that is not one of the allowed numbers names them', async () => {
    const size = await refusal('target.namespace.add', {
      nqn: 'nqn.2026-01.com.example:a',
      backend: { kind: 'memory', sizeBytes: 1 << 20 },
      blockSize: 1024,
    });
    expect(size.code).toBe(ErrorCode.InvalidParams);
    expect(size.data?.field).toBe('blockSize');
    expect(size.message).toBe(
      'Invalid parameters for target.namespace.add: blockSize: Invalid option: expected one of 512|4096.',
    );
    const hash = await refusal('host.secret.create', {
      hostNqn: 'nqn.2026-01.com.example:host',
      hash: 5,
    });
    expect(hash.data?.field).toBe('hash');
    expect(hash.message).toBe(
      'Invalid parameters for host.secret.create: hash: Invalid option: expected one of 1|2|3.',
    );
  });

  it('a value of one of several shapes says what is wrong in the shape it has', async () => {
    const at = Date.now() - 60_000;
    const wrongMetric = await refusal('metrics.query', {
      series: { scope: 'node', metric: 'cpu_load' },
      from: at,
    });
    expect(wrongMetric.data?.field).toBe('series.metric');
    expect(wrongMetric.message).toMatch(
      /^Invalid parameters for metrics\.query: series\.metric: Invalid option: expected one of /,
    );
    const empty = await refusal('metrics.query', { series: '', from: at });
    expect(empty.data?.field).toBe('series');
    expect(empty.message).toMatch(/series: Too small: expected string to have >=1 characters\.$/);
    // of no option's type: what each would take
    const neither = await refusal('metrics.query', { series: 5, from: at });
    expect(neither.message).toBe(
      'Invalid parameters for metrics.query: series: Invalid input: expected string, received number; or expected object, received number.',
    );
  });
});
