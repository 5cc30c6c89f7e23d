/**
 * Exclude/include rules: decides which paths inside a guest root vunify may
 * look at at all.
 *
 * Why this exists: guests share most of /usr with each other, but some files
 * are private (password hashes, SSH keys) or mutable (/var, /tmp). Hardlinking
 * those across guests would leak secrets between guests or let one guest's
 * write show up in another, so they must never be candidates. The rules follow
 * util-vserver's vunify exclude list (distrib/misc/vunify-exclude) with the
 * same first-match-wins evaluation (lib_internal/matchlist-compare.c); see
 * docs/excludes.md for the syntax and for where we deliberately differ.
 *
 * Matching is byte-wise: Linux file names are bytes and need not be UTF-8, so
 * the walker hands us names as latin1 "binary strings" (one char per byte) and
 * patterns are converted to the same form. Decoding names as UTF-8 instead
 * could map two different byte names onto the same string.
 *
 * native/glob.c is the same matcher in C, for the native walk (which decides
 * excludes on its own threads): a change to the syntax or semantics here is a
 * change there too; test/pipeline/excludes.test.ts asks both about every case
 * and about thousands of random rules and byte paths.
 *
 * match() runs once per directory entry (~100k per run), so every pattern is
 * compiled once to a sticky RegExp plus literal prefix/suffix filters that
 * reject most rules without running the regex, and the verdict for the parent
 * directory is cached so a walker's typical call allocates nothing.
 */
import { UsageError } from '../core/errors.js';

export type RuleKind = 'include' | 'exclude';

export interface Rule {
  kind: RuleKind;
  /** The glob without its +/-/~ prefix, as written (a JS string, not latin1). */
  pattern: string;
  /** Original text including any prefix, for messages. */
  text: string;
}

/** A pattern that cannot be parsed: bad usage, exit 2 like any other. */
export class ExcludeSyntaxError extends UsageError {
  override name = 'ExcludeSyntaxError';
}

export interface Matcher {
  /** 'exclude' when the path must be skipped (for a directory: pruned), else 'include' */
  match(relPathLatin1: string): RuleKind;
}

/**
 * util-vserver's default list (distrib/misc/vunify-exclude), one rule per
 * entry. One deliberate change: util-vserver's last entry is `/*\/ls-R`, which
 * only works there because it calls fnmatch() without FNM_PATHNAME, so `*` spans
 * directories and the entry catches TeX's generated ls-R databases at any depth
 * (/usr/share/texmf/ls-R, ...). Our `*` stops at `/` (otherwise
 * `/etc/gconf/*` would swallow `/etc/gconf/schemas/...`, defeating the
 * `+/etc/gconf/schemas` entry), so the same intent is written `/**\/ls-R`.
 */
export const DEFAULT_EXCLUDES: readonly string[] = Object.freeze([
  '/.rpmdb',
  '/dev',
  '~/etc/shadow',
  '~/etc/passwd',
  '~/etc/group',
  '+/etc/termcap',
  '+/etc/gconf',
  '+/etc/gconf/schemas',
  '/etc/gconf/*',
  '/etc/*',
  '/home',
  '/proc',
  '/mnt',
  '+/root/.ssh',
  '~/root/.ssh/id*',
  '-/root/.ssh/*',
  '+/root/.gnupg',
  '~/root/.gnupg/secring*',
  '-/root/.gnupg/*',
  '-/root/*',
  '/selinux',
  '/sys',
  '~/tmp/*',
  '/tmp',
  '~/var/tmp/*',
  '/var',
  '/**/ls-R',
]);

/**
 * `+` includes; `-` excludes; `~` also excludes. util-vserver's `~` (stSKIP)
 * only differs from `-` in vcopy, where `-` means "copy instead of link" and
 * `~` means "do not even copy"; vunify only links, so both mean "skip".
 */
export function parseRule(text: string, defaultKind: RuleKind = 'exclude'): Rule {
  let kind = defaultKind;
  let pattern = text;
  const c = text.charAt(0);
  if (c === '+' || c === '-' || c === '~') {
    kind = c === '+' ? 'include' : 'exclude';
    pattern = text.slice(1);
    if (pattern === '') {
      throw new ExcludeSyntaxError(`invalid rule '${text}': prefix '${c}' is not followed by a pattern`);
    }
    // rsync writes "+ /etc/hosts"; here that would silently mean a name
    // starting with a space, which is almost certainly not what was meant.
    if (pattern.charAt(0) === ' ' || pattern.charAt(0) === '\t') {
      throw new ExcludeSyntaxError(
        `invalid rule '${text}': no space allowed after '${c}' (write '${c}${pattern.trimStart()}'; ` +
          `to match a name that starts with a space use '[ ]')`,
      );
    }
  }
  if (pattern === '') throw new ExcludeSyntaxError('invalid rule: empty pattern');
  const rule: Rule = { kind, pattern, text };
  compileRule(rule); // surface syntax errors now, where the text is known
  return rule;
}

/** The user's rules, then (unless dropped) the default list: first match wins, so the user's come first. */
export function withDefaults(rules: readonly Rule[], noDefaultExcludes: boolean): readonly Rule[] {
  return noDefaultExcludes ? rules : [...rules, ...DEFAULT_EXCLUDES.map((r) => parseRule(r))];
}

export function parseRuleFile(contents: string, source: string): Rule[] {
  const rules: Rule[] = [];
  const lines = contents.split('\n');
  for (let i = 0; i < lines.length; i++) {
    // Trailing blanks are invisible in an editor and util-vserver strips them
    // too; CR comes from files edited on other systems.
    const line = (lines[i] as string).trim();
    if (line === '' || line.charAt(0) === '#') continue;
    try {
      rules.push(parseRule(line, 'exclude'));
    } catch (err) {
      if (err instanceof ExcludeSyntaxError) {
        throw new ExcludeSyntaxError(`${source}:${i + 1}: ${err.message}`);
      }
      throw err;
    }
  }
  return rules;
}

interface CompiledRule {
  readonly kind: RuleKind;
  /** true: matched against the whole path; false: against the last component. */
  readonly anchored: boolean;
  /** Set when the pattern has no wildcards: a plain string comparison suffices. */
  readonly exact: string | null;
  /** Literal text every match must start with (at the component start if !anchored). */
  readonly prefix: string;
  /** Literal text every match must end with. */
  readonly suffix: string;
  readonly re: RegExp;
}

/**
 * A path is excluded when its own level, or the level of any ancestor
 * directory, hits an exclude rule first (each level evaluated first-match-wins
 * on that level's path). That is exactly what a walker that prunes excluded
 * directories computes, but it does not depend on the caller pruning: asking
 * about /var/lib/dpkg/status directly says 'exclude' because /var does.
 *
 * Ancestor verdicts are cached in two slots (the last path asked about and the
 * last parent), which a walker that lists one directory at a time hits for all
 * but the first entry of each directory; the hit path allocates nothing.
 */
export function compileRules(rules: readonly Rule[]): Matcher {
  const compiled: readonly CompiledRule[] = rules.map(compileRule);
  const n = compiled.length;

  /** First matching rule for this one path, ignoring ancestors. */
  const level = (rel: string, base: number): RuleKind => {
    for (let i = 0; i < n; i++) {
      const r = compiled[i] as CompiledRule;
      if (r.anchored) {
        if (r.exact !== null) {
          if (rel === r.exact) return r.kind;
          continue;
        }
        if (!rel.startsWith(r.prefix) || !rel.endsWith(r.suffix)) continue;
        r.re.lastIndex = 0;
      } else {
        if (r.exact !== null) {
          if (rel.length - base === r.exact.length && rel.startsWith(r.exact, base)) return r.kind;
          continue;
        }
        if (!rel.startsWith(r.prefix, base) || !rel.endsWith(r.suffix)) continue;
        r.re.lastIndex = base;
      }
      if (r.re.test(rel)) return r.kind;
    }
    return 'include';
  };

  /** true when no level of `dir` (a full path) is excluded. Allocates: cache misses only. */
  const chainOk = (dir: string): boolean => {
    let prev = 0;
    for (let i = dir.indexOf('/', 1); i !== -1; i = dir.indexOf('/', i + 1)) {
      if (level(dir.slice(0, i), prev + 1) === 'exclude') return false;
      prev = i;
    }
    return level(dir, prev + 1) !== 'exclude';
  };

  let lastPath = '';
  let lastOk = true;
  let dirPath = '';
  let dirOk = true;
  const isChildOf = (rel: string, slash: number, dir: string): boolean =>
    dir.length === slash && rel.startsWith(dir);

  return {
    match(rel: string): RuleKind {
      if (rel.charCodeAt(0) !== 0x2f) {
        throw new TypeError(`excludes: path must start with '/': ${JSON.stringify(rel)}`);
      }
      const slash = rel.lastIndexOf('/');
      let parentOk: boolean;
      if (slash === 0) {
        parentOk = true; // parent is the guest root
      } else if (isChildOf(rel, slash, dirPath)) {
        parentOk = dirOk;
      } else if (isChildOf(rel, slash, lastPath)) {
        // The walker just asked about this directory and is now listing it.
        dirPath = lastPath;
        dirOk = parentOk = lastOk;
      } else {
        dirPath = rel.slice(0, slash);
        dirOk = parentOk = chainOk(dirPath);
      }
      const ok = parentOk && level(rel, slash + 1) !== 'exclude';
      lastPath = rel;
      lastOk = ok;
      return ok ? 'include' : 'exclude';
    },
  };
}

// ---------------------------------------------------------------------------
// Glob compilation

type Token =
  | { readonly t: 'lit'; readonly s: string }
  | { readonly t: 're'; readonly src: string }
  /** `**` as a whole component; carries its own leading '/'. */
  | { readonly t: 'globstar'; readonly trailing: boolean };

const STAR_RE = '[^/]*';
const QMARK_RE = '[^/]';

function compileRule(rule: Rule): CompiledRule {
  const fail = (why: string): never => {
    throw new ExcludeSyntaxError(`invalid pattern '${rule.text}': ${why}`);
  };
  const pattern = rule.pattern;
  if (pattern === '') fail('empty pattern');
  if (pattern.includes('\0')) fail('NUL cannot occur in file names');

  // Byte-wise from here on, in the same latin1 form the walker uses.
  const p = Buffer.from(pattern, 'utf8').toString('latin1');
  // Split into components on '/' ('\/' is a separator too: a component can
  // never contain '/'). A '/' inside [...] also splits, which then fails as an
  // unterminated '['; a set could never match '/' anyway.
  const comps: string[] = [];
  let cur = '';
  for (let i = 0; i < p.length; i++) {
    const ch = p[i] as string;
    if (ch === '\\' && i + 1 < p.length && p[i + 1] !== '/') {
      cur += ch + (p[i + 1] as string);
      i++;
    } else if (ch === '/' || (ch === '\\' && i + 1 < p.length)) {
      if (ch === '\\') i++;
      comps.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  comps.push(cur);
  if (comps.length > 1 && comps[comps.length - 1] === '') {
    fail(
      comps.every((c) => c === '')
        ? "'/' is the guest root itself; use '/*' or '/**' to match everything in it"
        : `trailing '/' is not supported; write '${pattern.replace(/\/+$/, '')}' ` +
            '(a rule that matches a directory already covers everything below it)',
    );
  }

  // No '/' at all: match the name at any depth (rsync/gitignore style). This is
  // also what util-vserver effectively does for `*.log`, since its `*` spans '/'.
  const anchored = comps.length > 1;
  if (anchored && comps[0] === '') comps.shift(); // leading '/' is optional for anchored rules

  const tokens: Token[] = [];
  for (let ci = 0; ci < comps.length; ci++) {
    const comp = comps[ci] as string;
    if (comp === '') fail("empty path component ('//')");
    if (comp === '.' || comp === '..') fail(`'${comp}' components never occur in walked paths`);
    if (anchored && comp === '**') {
      const prev = tokens[tokens.length - 1];
      if (prev !== undefined && prev.t === 'globstar') continue; // '**/**' == '**'
      tokens.push({ t: 'globstar', trailing: ci === comps.length - 1 });
      continue;
    }
    if (anchored) tokens.push({ t: 'lit', s: '/' });
    compileComponent(comp, tokens, fail);
  }

  // Merge adjacent literals so prefix/suffix filters see the longest strings.
  const merged: Token[] = [];
  for (const tok of tokens) {
    const last = merged[merged.length - 1];
    if (tok.t === 'lit' && last !== undefined && last.t === 'lit') {
      merged[merged.length - 1] = { t: 'lit', s: last.s + tok.s };
    } else {
      merged.push(tok);
    }
  }

  const first = merged[0];
  const last = merged[merged.length - 1];
  const exact = merged.length === 1 && first !== undefined && first.t === 'lit' ? first.s : null;
  const prefix = first !== undefined && first.t === 'lit' ? first.s : '';
  const suffix = last !== undefined && last.t === 'lit' && merged.length > 1 ? last.s : '';

  let src = '';
  for (const tok of merged) {
    if (tok.t === 'lit') src += escapeLiteral(tok.s);
    else if (tok.t === 're') src += tok.src;
    // Trailing '/**' means "everything below" (at least one component), a
    // leading or inner one "zero or more components", as in gitignore.
    else src += tok.trailing ? '(?:/[^/]*)+' : '(?:/[^/]*)*';
  }
  // Sticky: anchored at lastIndex (0, or the start of the last component).
  const re = new RegExp(src + '$', 'y');
  return { kind: rule.kind, anchored, exact, prefix, suffix, re };
}

function compileComponent(comp: string, out: Token[], fail: (why: string) => never): void {
  let lit = '';
  const flush = (): void => {
    if (lit !== '') out.push({ t: 'lit', s: lit });
    lit = '';
  };
  for (let i = 0; i < comp.length; i++) {
    const ch = comp[i] as string;
    if (ch === '\\') {
      if (i + 1 >= comp.length) fail("'\\' at the end of the pattern escapes nothing");
      lit += comp[++i] as string;
    } else if (ch === '*') {
      while (comp[i + 1] === '*') i++; // 'a**b' == 'a*b'; avoids needless backtracking
      flush();
      out.push({ t: 're', src: STAR_RE });
    } else if (ch === '?') {
      flush();
      out.push({ t: 're', src: QMARK_RE });
    } else if (ch === '[') {
      flush();
      const { src, end } = compileBracket(comp, i, fail);
      out.push({ t: 're', src });
      i = end;
    } else {
      lit += ch;
    }
  }
  flush();
}

const POSIX_CLASSES: Readonly<Record<string, (c: number) => boolean>> = {
  alpha: (c) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122),
  digit: (c) => c >= 48 && c <= 57,
  alnum: (c) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122),
  upper: (c) => c >= 65 && c <= 90,
  lower: (c) => c >= 97 && c <= 122,
  xdigit: (c) => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102),
  space: (c) => c === 32 || (c >= 9 && c <= 13),
  blank: (c) => c === 32 || c === 9,
  punct: (c) => (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126),
  cntrl: (c) => c < 32 || c === 127,
  print: (c) => c >= 32 && c <= 126,
  graph: (c) => c >= 33 && c <= 126,
};

/**
 * Builds a 256-entry byte table and emits it as an explicit \xHH class, so
 * ranges and negation work on bytes and '/' can be removed whatever range
 * would have included it (FNM_PATHNAME: nothing but a literal '/' matches '/').
 */
function compileBracket(
  comp: string,
  start: number,
  fail: (why: string) => never,
): { src: string; end: number } {
  const set = new Uint8Array(256);
  let j = start + 1;
  let negate = false;
  if (comp[j] === '!' || comp[j] === '^') {
    negate = true;
    j++;
  }
  const unterminated = (): never =>
    fail(`unterminated '[' (write '\\[' or '[[]' to match a literal '[')`);
  const readChar = (): number => {
    if (j >= comp.length) unterminated();
    let ch = comp[j] as string;
    if (ch === '\\') {
      j++;
      if (j >= comp.length) unterminated();
      ch = comp[j] as string;
    }
    j++;
    const code = ch.charCodeAt(0);
    if (code >= 0x80) {
      fail(
        'non-ASCII characters are not supported inside [...] because matching is byte-wise ' +
          "(a UTF-8 character is several bytes); use '*' or spell the name out",
      );
    }
    return code;
  };

  let first = true;
  for (;;) {
    if (j >= comp.length) unterminated();
    if (comp[j] === ']' && !first) break;
    first = false;
    if (comp[j] === '[' && (comp[j + 1] === ':' || comp[j + 1] === '.' || comp[j + 1] === '=')) {
      const kind = comp[j + 1] as string;
      const close = comp.indexOf(kind + ']', j + 2);
      if (close < 0) unterminated();
      const name = comp.slice(j + 2, close);
      if (kind !== ':') fail(`'[${kind}${name}${kind}]' collating elements are not supported`);
      const test = POSIX_CLASSES[name];
      if (test === undefined) fail(`unknown character class '[:${name}:]'`);
      for (let c = 0; c < 128; c++) if ((test as (c: number) => boolean)(c)) set[c] = 1;
      j = close + 2;
      continue;
    }
    const lo = readChar();
    if (comp[j] === '-' && j + 1 < comp.length && comp[j + 1] !== ']') {
      j++;
      const hi = readChar();
      if (hi < lo) {
        fail(`range '${String.fromCharCode(lo)}-${String.fromCharCode(hi)}' is reversed`);
      }
      for (let c = lo; c <= hi; c++) set[c] = 1;
    } else {
      set[lo] = 1;
    }
  }
  if (negate) for (let c = 0; c < 256; c++) set[c] = set[c] ? 0 : 1;
  set[0x2f] = 0;
  set[0] = 0;

  let src = '';
  for (let c = 0; c < 256; c++) {
    if (!set[c]) continue;
    let e = c;
    while (e + 1 < 256 && set[e + 1]) e++;
    src += e === c ? hex(c) : e === c + 1 ? hex(c) + hex(e) : `${hex(c)}-${hex(e)}`;
    c = e;
  }
  if (src === '') fail(`'${comp.slice(start, j + 1)}' can never match ('/' separates path components)`);
  return { src: `[${src}]`, end: j };
}

function hex(c: number): string {
  return '\\x' + (c < 16 ? '0' : '') + c.toString(16);
}

function escapeLiteral(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const plain = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 47 || c === 95;
    out += plain ? s[i] : hex(c);
  }
  return out;
}
