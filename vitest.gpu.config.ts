import { defineConfig } from 'vitest/config';

// GPU tests: one process at a time, long timeouts.
export default defineConfig({
  test: {
    include: ['test/gpu/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
