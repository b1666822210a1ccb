// ESLint (typescript-eslint) for the whole project, plus the rules Temporal's workflow sandbox implies for
// workflows/: workflow code runs deterministically in a V8 isolate, so it may not reach Node built-ins, the
// network, the file system or non-deterministic globals, and it may import activities only as types (they run in
// workers, through proxyActivities).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const NODE_BUILTINS = ['assert', 'buffer', 'child_process', 'cluster', 'crypto', 'dgram', 'dns', 'events', 'fs', 'fs/promises', 'http',
  'http2', 'https', 'module', 'net', 'os', 'path', 'perf_hooks', 'process', 'readline', 'stream', 'timers', 'tls', 'url', 'util', 'v8',
  'vm', 'worker_threads', 'zlib'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'build/**', 'runs/**', 'dist/**', '.tools/**', 'bench/peer/**', 'test/fixtures/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', __dirname: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', URL: 'readonly', TextDecoder: 'readonly', TextEncoder: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', fetch: 'readonly', performance: 'readonly', queueMicrotask: 'readonly', structuredClone: 'readonly' } },
    rules: {
      // Unused names are errors, except the deliberate `_name` and rest siblings used to drop a key.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true, caughtErrors: 'none' }],
    },
  },
  {
    // Tests poke at SDK and protobuf internals (raw history events, decoded payloads, failure shapes) untyped.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // The dev server's core decodes requests by protobufjs reflection: payloads, failures and attributes are
    // plain objects whose shape the proto descriptors check at run time, not TypeScript.
    files: ['devserver/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // CommonJS scripts (run by plain node, e.g. on a GPU host without the TypeScript toolchain) load with require().
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', exports: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', {
        paths: [
          ...NODE_BUILTINS.map((name) => ({ name, message: 'workflow code runs in a deterministic sandbox without Node built-ins' })),
          { name: '@temporalio/activity', message: 'activities run in workers: call them through proxyActivities' },
          { name: '@temporalio/client', message: 'workflows talk to Temporal through @temporalio/workflow only' },
          { name: '@temporalio/worker', message: 'workflows talk to Temporal through @temporalio/workflow only' },
        ],
        patterns: [
          { group: ['node:*'], message: 'workflow code runs in a deterministic sandbox without Node built-ins' },
          { group: ['../activities/*', '../native/*', '../datasets/*', '../cli/*', '../devserver/*'], allowTypeImports: true,
            message: 'workflow code may import these only as types (import type): they do I/O' },
        ],
      }],
      'no-restricted-globals': ['error',
        ...['process', 'require', 'Buffer', '__dirname', 'setImmediate', 'fetch', 'WeakRef', 'FinalizationRegistry', 'SharedArrayBuffer', 'Atomics']
          .map((name) => ({ name, message: `${name} is not deterministic or not available in Temporal's workflow sandbox` })),
      ],
    },
  },
);
