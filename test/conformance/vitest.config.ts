import { defineConfig } from 'vitest/config';

// Conformance runs the real Linux kernel NVMe/TCP host in QEMU (software emulation):
// slow, one VM at a time on this 2-core machine.
export default defineConfig({
  test: {
    include: ['test/conformance/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: 'forks',
    globalSetup: ['test/setup/tmpdir.ts'],
  },
});
