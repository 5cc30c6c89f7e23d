/*
 * Filesystem errors, classified in one place.
 *
 * vunify's rule: an error on one file is reported, that file is skipped, and
 * the run goes on; only bad usage or an unusable root stops the run. The
 * helpers here turn whatever was thrown into the {path, code, message} shape
 * the report carries, and give the few codes the linker treats specially a
 * readable reason.
 */

/** Errors that are about the invocation rather than one file: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface FileError {
  path: string;
  code: string;
  message: string;
}

export function errorCode(er: unknown): string | undefined {
  if (er && typeof er === 'object' && 'code' in er && typeof er.code === 'string') return er.code;
  return undefined;
}

/** A thrown error with a code of vunify's own, for conditions no errno names. */
export function codedError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

const REASONS: Record<string, string> = {
  ENOENT: 'vanished (deleted or renamed while vunify worked)',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted (immutable or append-only?)',
  EXDEV: 'on another filesystem or mount',
  ELOOP: 'a path component is now a symlink',
  ENOTDIR: 'a path component is no longer a directory',
  EMLINK: 'too many links',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only filesystem',
  EIO: 'input/output error',
  ECHANGED: 'changed since it was scanned',
};

/**
 * Report-ready description of a per-file failure: a system call's error gets
 * a plain reason plus its code and call; vunify's own errors (ECHANGED,
 * EDIFFERENT, EFLAGS, ...) already carry a sentence.
 */
export function fileError(path: string, er: unknown): FileError {
  const code = errorCode(er) ?? 'EUNKNOWN';
  const syscall = er && typeof er === 'object' && 'syscall' in er ? String(er.syscall) : undefined;
  const detail = er instanceof Error ? er.message : String((er as { message?: unknown })?.message ?? er);
  const reason = REASONS[code];
  const message = syscall ? `${reason ?? detail} (${code}, ${syscall})` : detail;
  return { path, code, message };
}
