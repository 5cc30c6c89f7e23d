// Simulate a run SIGKILLed in the middle of linking or splitting, in process:
// at the first unlink of one of its temporary names (after the exchange, the
// moment the old inode would go), the run stops dead and its journals are
// kept as the kill would have left them, under the name of a dead process.
import fs from 'node:fs';
import path from 'node:path';
import { vi } from 'vitest';
import { sys } from '../../src/os/sys.js';

/**
 * Make `unlinkAt` of the first temporary name throw, as if the run were
 * killed there. Returns `restore()`, which ends the mocking, writes the
 * journals as they were at that moment back as `journal.1.*` (pid 1: never
 * a vunify run, so the next run recovers them) and says whether the kill
 * happened.
 */
export function killAtFirstUnlink(stateDir: string): () => boolean {
  const saved: [string, Buffer][] = [];
  const real = sys.unlinkAt;
  let killed = false;
  vi.spyOn(sys, 'unlinkAt').mockImplementation((dirFd, name, flags) => {
    if (!killed && name.toString().startsWith('.vunify.')) {
      killed = true;
      for (const n of fs.readdirSync(stateDir)) if (n.startsWith('journal.')) saved.push([n, fs.readFileSync(path.join(stateDir, n))]);
      throw Object.assign(new Error('killed'), { code: 'EKILLED' });
    }
    return real(dirFd, name, flags);
  });
  return () => {
    vi.restoreAllMocks();
    for (const [n, b] of saved) fs.writeFileSync(path.join(stateDir, n.replace(/^journal\.\d+\./, 'journal.1.')), b);
    return killed;
  };
}
