/**
 * The benchmark loop's warm-up: the measured window opens after a minimum count of
 * I/Os as well as a minimum time, and the unmeasured warm-up before a pattern's first
 * round goes on while the rate still rises. The I/O here is simulated: slow completions
 * (timers) stand for code V8 has not optimised yet, fast ones (setImmediate) for warm
 * code. Nothing asserts a speed; only which I/Os the window can contain.
 */
import { describe, expect, it } from 'vitest';
import {
  runLoop,
  warmedUp,
  warmUp,
  WARM_UP,
  type Pattern,
  type Submit,
} from '../../../engine/src/bench/patterns.js';

const qd1: Pattern = { pattern: 'randread', bs: 4096, qd: 1, queues: 1 };

/** A Submit that completes its first `slow` I/Os after a timer, then at once; counts them. */
function simulated(slow: number) {
  const io = { submitted: 0, completed: 0 };
  const submit: Submit = (_write, _offset, _len, _queue, done) => {
    const n = io.submitted++;
    const complete = () => {
      io.completed++;
      done(null);
    };
    if (n < slow) setTimeout(complete, 1);
    else setImmediate(complete);
  };
  return { io, submit };
}

describe('runLoop', () => {
  it('opens the measured window only after warmupIos completions, however long that takes', async () => {
    // 200 slow I/Os take at least 200 ms: the 5 ms minimum alone would measure most of them
    const { io, submit } = simulated(200);
    let completedAtStart = -1;
    const stats = await runLoop(qd1, submit, {
      span: 1 << 20,
      warmupMs: 5,
      warmupIos: 200,
      warmupMaxMs: 60_000,
      durationMs: 20,
      onWindow: (edge) => edge === 'start' && (completedAtStart = io.completed),
    });
    expect(completedAtStart).toBeGreaterThanOrEqual(200);
    expect(stats.ios).toBe(io.completed - completedAtStart);
  });

  it('opens the window at warmupMaxMs on a machine too slow for the count', async () => {
    const { submit } = simulated(Infinity);
    const stats = await runLoop(qd1, submit, {
      span: 1 << 20,
      warmupMs: 1,
      warmupIos: 1e9,
      warmupMaxMs: 30,
      durationMs: 10,
    });
    expect(stats.ios).toBeGreaterThan(0);
  });

  it('fails once, and issues nothing more, when submit refuses at once', async () => {
    // the host library refuses synchronously once a controller is no longer live
    let submitted = 0;
    const edges: string[] = [];
    const submit: Submit = (_write, _offset, _len, _queue, done) => {
      submitted++;
      done(new Error('controller is not live'));
    };
    const qd32: Pattern = { pattern: 'randread', bs: 4096, qd: 32, queues: 2 };
    await expect(
      runLoop(qd32, submit, {
        span: 1 << 20,
        warmupMs: 1,
        warmupIos: 1,
        warmupMaxMs: 10,
        durationMs: 10,
        onWindow: (edge) => edges.push(edge),
      }),
    ).rejects.toThrow('controller is not live');
    expect(submitted).toBe(1);
    expect(edges).toEqual(['end']);
  });
});

describe('warmUp', () => {
  const chunk = (iops: number, ios = 3000) => ({ iops, ios });

  it('goes on while the rate still rises, and until WARM_UP.minIos I/Os', () => {
    // the first chunk alone cannot tell
    expect(warmedUp([chunk(20_000, 1e6)], 75)).toBe(false);
    // steady, with enough I/Os: done
    expect(warmedUp([chunk(20_000), chunk(21_000)], 150)).toBe(true);
    // steady but too few I/Os: slow code that V8 has not optimised yet can be steady too
    expect(warmedUp([chunk(2000, 150), chunk(2000, 150)], 150)).toBe(false);
    // plenty of I/Os, but the last chunk rose by more than WARM_UP.rise: not yet
    expect(warmedUp([chunk(2000), chunk(3000), chunk(20_000)], 225)).toBe(false);
    expect(warmedUp([chunk(2000), chunk(3000), chunk(20_000), chunk(19_000)], 300)).toBe(true);
    // a machine that never settles: WARM_UP.maxMs ends it
    expect(warmedUp([chunk(1), chunk(2)], WARM_UP.maxMs)).toBe(true);
  });

  it('runs the loop in chunks until warmedUp says so', async () => {
    const { io, submit } = simulated(0);
    await warmUp(qd1, submit, 1 << 20);
    expect(io.completed).toBeGreaterThanOrEqual(WARM_UP.minIos);
    expect(io.completed).toBe(io.submitted); // each chunk drains before the next
  });
});
