// Pure modules load without the native addon: value types, path formatting,
// planning, the capacity model, manifests and rendering. Each is imported
// from the built tree in a fresh Node process whose process.dlopen throws,
// so any import chain that reaches build/Release/vunify.node fails here.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const DIST = path.join(import.meta.dirname, '..', '..', 'dist');
const PURE = [
  'core/errors.js', 'core/paths.js', 'core/progress.js', 'core/stat.js', 'core/types.js', 'core/xxhash.js', 'core/xxh3.js',
  'pipeline/group.js', 'pipeline/plan.js', 'pipeline/table.js', 'pipeline/table-builder.js', 'pipeline/rows.js', 'pipeline/plan-rows.js',
  'report/report.js', 'report/capacity-model.js', 'report/manifest.js', 'report/placement.js',
  'report/render/text.js', 'report/render/html.js', 'report/render/csv.js', 'report/render/table.js', 'report/render/fleet.js',
];

function importWithoutAddon(module: string) {
  const blockAddon = 'data:text/javascript,' + encodeURIComponent(
    "process.dlopen = (m, file) => { throw new Error('native addon loaded: ' + file); };",
  );
  const load = `await import(${JSON.stringify(path.join(DIST, module))}); console.log('loaded');`;
  return spawnSync(process.execPath, ['--import', blockAddon, '--input-type=module', '-e', load], { encoding: 'utf8' });
}

describe('pure modules', () => {
  it.each(PURE)('%s loads without the native addon', (module) => {
    const r = importWithoutAddon(module);
    expect([r.status, r.stderr.trim(), r.stdout.trim()]).toEqual([0, '', 'loaded']);
  });

  it('the guard works: a module that needs the addon fails to load', () => {
    const r = importWithoutAddon('os/sys.js');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/native addon loaded: .*vunify\.node/);
  });
});
