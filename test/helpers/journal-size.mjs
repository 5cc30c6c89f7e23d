// Preloaded (node --import) into a vunify run by tests: just before the run
// deletes its journal, append "<bytes> <lines>" of it to the file named by
// VUNIFY_TEST_JOURNAL_SIZES. The journal of a run that ends well is gone by
// the time a test could look at it. The run unlinks it through the built
// sys seam (dist/os/sys.js, found beside the CLI named by VUNIFY_TEST_BIN),
// relative to the state directory's descriptor, so the hook reads it there.
import fs from 'node:fs';
import path from 'node:path';

const out = process.env.VUNIFY_TEST_JOURNAL_SIZES;
if (out) {
  const { sys } = await import(path.join(path.dirname(process.env.VUNIFY_TEST_BIN), 'os', 'sys.js'));
  const unlinkAt = sys.unlinkAt;
  sys.unlinkAt = (dirFd, name, flags) => {
    if (/^journal\./.test(name.toString('latin1'))) {
      const text = fs.readFileSync(`/proc/self/fd/${dirFd}/${name.toString('latin1')}`, 'utf8');
      fs.appendFileSync(out, `${Buffer.byteLength(text)} ${text.split('\n').length - 1}\n`);
    }
    return unlinkAt(dirFd, name, flags);
  };
}
