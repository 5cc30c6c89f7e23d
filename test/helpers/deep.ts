/*
 * Deep directory chains for tests: Node's fs cannot work below PATH_MAX, so
 * a small Python script builds the chain relative to each directory's
 * descriptor (mkdir and open with dir_fd), one level at a time.
 */
import { execFileSync } from 'node:child_process';

const SCRIPT = `
import os, sys, json
root, depth, name_len, content, mtime, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode(), float(sys.argv[5]), int(sys.argv[6])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for level in range(depth):
  if every and level % every == 0:
    f = os.open('f', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
    os.write(f, content + str(level).encode())
    os.utime(f, (mtime, mtime))
    os.close(f)
  if True:
    name = ('%04d' % level).ljust(name_len, 'd')
    os.mkdir(name, 0o755, dir_fd=fd)
    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nfd
for name, data in json.loads(sys.argv[7]).items():
  f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
  os.write(f, data.encode())
  os.utime(f, (mtime, mtime))
  os.close(f)
os.close(fd)
`;

/**
 * Under the existing directory `root`, a chain of `depth` directories whose
 * names are `nameLength` bytes, with a file `f` at every `every`th level
 * from `root` on (content `content` + its level, a fixed mtime; `every` 0:
 * none), so two chains made alike hold ceil(depth / every) pairs of
 * identical files; and in its deepest directory a file per entry of
 * `bottom` (name => content, mode 0644, the same mtime).
 */
export function makeChain(
  root: string,
  depth: number,
  opts: { nameLength?: number; every?: number; content?: string; bottom?: Record<string, string> } = {},
): void {
  const args = [root, depth, opts.nameLength ?? 255, opts.content ?? 'deep file at level ', 1_700_000_000, opts.every ?? 1, JSON.stringify(opts.bottom ?? {})].map(String);
  execFileSync('python3', ['-c', SCRIPT, ...args], { stdio: 'inherit' });
}
