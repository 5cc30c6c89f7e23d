// Two tiers, one vitest run:
//   fast      unit and filesystem tests, three files at a time: much of
//             their time is spent waiting (sleeps past the hash cache's racy
//             window, deep trees on a busy disk), so a third file uses the
//             cores better (npm run test:fast)
//   scenarios the long black-box scenarios (SIGKILL loop, hostile guest race,
//             concurrent writer, ext4 link limit, the Debian package), one file at a time and only
//             after the fast tier is done, so nothing else competes with them
//             (npm run test:scenarios)
// `npm test` runs both. A global setup builds dist/ first, so tests that
// spawn the CLI never run a stale build.
import { defineConfig } from 'vitest/config';

// Every file in test/scenarios/ (whole runs under hostile guests, kills,
// races, hung mounts, huge xattrs, deep trees) and the Debian package's test
// (on in CI or with VUNIFY_SLOW=1; it installs into a debootstrapped root).
const SCENARIOS = ['test/scenarios/*.test.ts', 'test/package/*.test.ts'];

export default defineConfig({
  test: {
    // Tests mount filesystems and change real trees: keep files in separate
    // processes; the heavy scenario files run one at a time.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'fast',
          maxWorkers: 3,
          sequence: { groupOrder: 0 },
          include: ['test/**/*.test.ts'],
          exclude: SCENARIOS,
          globalSetup: ['./test/helpers/build.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'scenarios',
          include: SCENARIOS,
          globalSetup: ['./test/helpers/build.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
          testTimeout: 300_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
