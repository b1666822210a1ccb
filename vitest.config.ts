import { defineConfig } from 'vitest/config';

// Tests that need no GPU. Integration suites start real servers and workers, so they run in forked processes
// with generous timeouts; GPU suites live in test/gpu and run through vitest.gpu.config.ts on a GPU host.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/gpu/**', 'node_modules/**'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
