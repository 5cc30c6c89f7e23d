import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/os/native.js';
import {
  DEFAULT_EXCLUDES,
  ExcludeSyntaxError,
  compileRules as compileRulesJs,
  parseRule,
  parseRuleFile,
  type Matcher,
  type Rule,
  type RuleKind,
} from '../../src/pipeline/excludes.js';

/** What the native walk hands the C matcher (native/glob.c): pattern bytes and include flags. */
const nativeRules = (rules: readonly Rule[]): [Buffer[], Uint8Array] => [
  rules.map((r) => Buffer.from(r.pattern, 'utf8')),
  Uint8Array.from(rules, (r) => (r.kind === 'include' ? 1 : 0)),
];

/**
 * compileRules, with every verdict also asked of the C matcher, which must
 * agree: so each case in this file is a differential case of native/glob.c too.
 */
function compileRules(rules: readonly Rule[]): Matcher {
  const js = compileRulesJs(rules);
  const [pats, inc] = nativeRules(rules);
  return {
    match(p: string): RuleKind {
      const verdict = js.match(p);
      const c = native.globExcluded(pats, inc, Buffer.from(p, 'latin1'));
      if (c !== (verdict === 'exclude')) {
        throw new Error(`C matcher says ${c ? 'exclude' : 'include'} for ${JSON.stringify(p)} ` +
          `under ${JSON.stringify(rules.map((r) => r.text))}, excludes.ts says ${verdict}`);
      }
      return verdict;
    },
  };
}

/** Paths reach the matcher as latin1 "binary strings", one char per byte. */
const bin = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
const bytes = (...b: number[]): string => Buffer.from(b).toString('latin1');

const defaults = (): Rule[] => DEFAULT_EXCLUDES.map((t) => parseRule(t));
const matcherOf = (...texts: string[]): ((p: string) => RuleKind) => {
  const m = compileRules(texts.map((t) => parseRule(t)));
  return (p) => m.match(p);
};

/**
 * What the walker does with the matcher: a file is a unification candidate
 * only if every ancestor directory was visited (matched 'include') and the
 * file itself matched 'include'.
 */
function candidates(rules: readonly Rule[], files: readonly string[]): string[] {
  const m = compileRules(rules);
  return files.filter((f) => {
    const parts = f.split('/').slice(1);
    for (let i = 1; i <= parts.length; i++) {
      if (m.match('/' + parts.slice(0, i).join('/')) === 'exclude') return false;
    }
    return true;
  });
}

describe('DEFAULT_EXCLUDES', () => {
  it('is util-vserver\'s list with /*/ls-R written as /**/ls-R', () => {
    expect(DEFAULT_EXCLUDES).toHaveLength(27);
    expect(DEFAULT_EXCLUDES[0]).toBe('/.rpmdb');
    expect(DEFAULT_EXCLUDES).toContain('~/root/.ssh/id*');
    expect(DEFAULT_EXCLUDES).not.toContain('/*/ls-R');
    expect(DEFAULT_EXCLUDES[26]).toBe('/**/ls-R');
    expect(Object.isFrozen(DEFAULT_EXCLUDES)).toBe(true);
  });

  it('parses every entry with the kind its prefix says', () => {
    const rules = defaults();
    expect(rules.filter((r) => r.kind === 'include').map((r) => r.pattern)).toEqual([
      '/etc/termcap',
      '/etc/gconf',
      '/etc/gconf/schemas',
      '/root/.ssh',
      '/root/.gnupg',
    ]);
    const shadow = rules.find((r) => r.text === '~/etc/shadow');
    expect(shadow).toEqual({ kind: 'exclude', pattern: '/etc/shadow', text: '~/etc/shadow' });
  });

  const m = compileRules(defaults());
  it.each([
    '/etc/passwd',
    '/etc/shadow',
    '/etc/group',
    '/etc/hosts',
    '/etc/ssh',
    '/etc/.pwd.lock',
    '/etc/gconf/other',
    '/etc/gconf/gconf.xml.defaults',
    '/root/.ssh/id_rsa',
    '/root/.ssh/id_ed25519.pub',
    '/root/.ssh/authorized_keys',
    '/root/.gnupg/secring.gpg',
    '/root/.gnupg/pubring.gpg',
    '/root/.bashrc',
    '/root/notes.txt',
    '/var',
    '/var/lib/dpkg/status',
    '/var/tmp/x',
    '/tmp',
    '/tmp/x',
    '/home',
    '/proc',
    '/sys',
    '/dev',
    '/mnt',
    '/selinux',
    '/.rpmdb',
    '/usr/share/texmf/ls-R',
    '/usr/share/texlive/texmf-dist/ls-R',
    '/usr/local/share/texmf/ls-R',
  ])('excludes %s', (p) => {
    expect(m.match(p)).toBe('exclude');
  });

  it.each([
    '/etc',
    '/etc/termcap',
    '/etc/gconf',
    '/etc/gconf/schemas',
    '/etc/gconf/schemas/x.xml',
    '/root',
    '/root/.ssh',
    '/root/.gnupg',
    '/usr',
    '/usr/lib/x86_64-linux-gnu/libc.so.6',
    '/usr/bin/ls',
    '/bin/bash',
    '/lib/ld-linux.so.2',
    '/opt/app/bin/tool',
    '/usr/share/doc/ls-R.txt',
    // anchored literals match whole components only
    '/homework',
    '/variable',
    '/tmpfs',
    '/etc2/passwd',
    '/usr/etc/passwd',
  ])('includes %s', (p) => {
    expect(m.match(p)).toBe('include');
  });

  it('makes only the right files candidates once directory pruning is applied', () => {
    const files = [
      '/etc/passwd',
      '/etc/termcap',
      '/etc/ssh/sshd_config',
      '/etc/gconf/schemas/desktop.schemas',
      '/etc/gconf/gconf.xml.defaults/%gconf-tree.xml',
      '/root/.ssh/id_rsa',
      '/root/.ssh/known_hosts',
      '/root/.gnupg/gpg.conf',
      '/root/.bashrc',
      '/usr/lib/x86_64-linux-gnu/libc.so.6',
      '/usr/share/texmf/ls-R',
      '/var/lib/dpkg/status',
      '/home/alice/.profile',
      '/tmp/x',
      '/bin/sh',
    ];
    expect(candidates(defaults(), files)).toEqual([
      '/etc/termcap',
      '/etc/gconf/schemas/desktop.schemas',
      '/usr/lib/x86_64-linux-gnu/libc.so.6',
      '/bin/sh',
    ]);
  });
});

describe('rule order', () => {
  it('first match wins', () => {
    const a = matcherOf('+/a/b', '/a/*');
    expect(a('/a/b')).toBe('include');
    expect(a('/a/c')).toBe('exclude');
    const b = matcherOf('/a/*', '+/a/b');
    expect(b('/a/b')).toBe('exclude');
  });

  it('unmatched paths are included', () => {
    expect(compileRules([]).match('/etc/shadow')).toBe('include');
    expect(matcherOf('/x')('/y')).toBe('include');
  });

  it('user rules placed before the defaults override them', () => {
    const rules = [parseRule('/etc/hosts', 'include'), parseRule('*.pyc', 'exclude'), ...defaults()];
    const m = compileRules(rules);
    expect(m.match('/etc/hosts')).toBe('include');
    expect(m.match('/etc/passwd')).toBe('exclude');
    expect(m.match('/usr/lib/python3/x.pyc')).toBe('exclude');
    expect(m.match('/usr/lib/python3/x.py')).toBe('include');
  });

  it('an included directory is only visited: entries below are matched again', () => {
    // Without the re-match, '+/root/.ssh' would hand out private keys.
    expect(candidates(defaults(), ['/root/.ssh/id_rsa'])).toEqual([]);
    // An include below a pruned directory cannot resurrect it.
    const rules = [parseRule('/var/lib/foo', 'include'), ...defaults()];
    expect(candidates(rules, ['/var/lib/foo'])).toEqual([]);
  });
});

describe('documented recipe', () => {
  it('opens /var/lib/foo step by step while the rest of /var stays excluded', () => {
    const user = [
      parseRule('/var', 'include'),
      parseRule('/var/lib', 'include'),
      parseRule('/var/lib/foo', 'include'),
      parseRule('/var/lib/*', 'exclude'),
      parseRule('/var/*', 'exclude'),
    ];
    const files = ['/var/lib/foo/data', '/var/lib/bar/data', '/var/log/syslog', '/var/lib/foo', '/var/tmp/x'];
    expect(candidates([...user, ...defaults()], files)).toEqual(['/var/lib/foo/data', '/var/lib/foo']);
  });
});

describe('wildcards', () => {
  it('* does not cross / but matches dot files and the empty string', () => {
    const m = matcherOf('/usr/*.so');
    expect(m('/usr/libc.so')).toBe('exclude');
    // '*' spanning '/' would match 'lib/libc.so'
    expect(m('/usr/lib/libc.so')).toBe('include');
    expect(matcherOf('/*/ls-R')('/usr/share/texmf/ls-R')).toBe('include');
    expect(matcherOf('/*/ls-R')('/usr/ls-R')).toBe('exclude');
    expect(matcherOf('/root/*')('/root/.bashrc')).toBe('exclude');
    expect(matcherOf('/a*b')('/ab')).toBe('exclude');
    expect(matcherOf('/a*b')('/a/b')).toBe('include');
  });

  it('? matches exactly one byte other than /', () => {
    const m = matcherOf('/a?b');
    expect(m('/axb')).toBe('exclude');
    expect(m('/ab')).toBe('include');
    expect(m('/axxb')).toBe('include');
    expect(m('/a/b')).toBe('include');
  });

  it('[...] sets, ranges, negation and classes never match /', () => {
    const set = matcherOf('/f[0-9a]x');
    expect(set('/f5x')).toBe('exclude');
    expect(set('/fax')).toBe('exclude');
    expect(set('/fbx')).toBe('include');
    for (const neg of ['/f[!0-9]x', '/f[^0-9]x']) {
      const m = matcherOf(neg);
      expect(m('/f5x')).toBe('include');
      expect(m('/fbx')).toBe('exclude');
      expect(m('/f/x')).toBe('include');
    }
    // '+'..'0' spans '/', which is still never matched
    const span = matcherOf('/a[+-0]b');
    expect(span('/a.b')).toBe('exclude');
    expect(span('/a0b')).toBe('exclude');
    expect(span('/a/b')).toBe('include');
    const cls = matcherOf('/v[[:digit:]][[:upper:]]');
    expect(cls('/v1A')).toBe('exclude');
    expect(cls('/v1a')).toBe('include');
    // ']' first is literal, '-' last is literal
    const lit = matcherOf('/[]-]');
    expect(lit('/]')).toBe('exclude');
    expect(lit('/-')).toBe('exclude');
    expect(lit('/x')).toBe('include');
  });

  it('** as a whole component spans any number of components', () => {
    const ls = matcherOf('/**/ls-R');
    expect(ls('/ls-R')).toBe('exclude');
    expect(ls('/a/ls-R')).toBe('exclude');
    expect(ls('/a/b/c/ls-R')).toBe('exclude');
    expect(ls('/a/ls-R2')).toBe('include');
    expect(ls('/a/xls-R')).toBe('include');
    const below = matcherOf('/usr/**');
    expect(below('/usr')).toBe('include');
    expect(below('/usr/x')).toBe('exclude');
    expect(below('/usr/x/y')).toBe('exclude');
    expect(below('/usrx')).toBe('include');
    const mid = matcherOf('/a/**/b');
    expect(mid('/a/b')).toBe('exclude');
    expect(mid('/a/x/y/b')).toBe('exclude');
    expect(mid('/a/x/y/c')).toBe('include');
    // '**' inside a component is just '*'
    const inner = matcherOf('/a**b');
    expect(inner('/axxb')).toBe('exclude');
    expect(inner('/a/b')).toBe('include');
  });

  it('a pattern without / matches the last component at any depth', () => {
    const m = matcherOf('*.log');
    expect(m('/x.log')).toBe('exclude');
    expect(m('/var/log/syslog.log')).toBe('exclude');
    expect(m('/x.logs')).toBe('include');
    expect(m('/x.logs/y')).toBe('include');
    // a directory called x.log is excluded with everything in it
    expect(m('/x.log/y')).toBe('exclude');
    expect(m('/x.logs')).toBe('include');
    const core = matcherOf('core');
    expect(core('/core')).toBe('exclude');
    expect(core('/usr/lib/core')).toBe('exclude');
    expect(core('/usr/lib/score')).toBe('include');
    expect(core('/corefile/x')).toBe('include');
    expect(core('/core/x')).toBe('exclude'); // inside an excluded directory
  });

  it('a pattern with an inner / is anchored at the guest root', () => {
    const m = matcherOf('etc/passwd');
    expect(m('/etc/passwd')).toBe('exclude');
    expect(m('/x/etc/passwd')).toBe('include');
  });
});

describe('literal characters', () => {
  it.each([
    ['/etc/ld.so.cache', '/etc/ld.so.cache', '/etc/ldXsoXcache'],
    ['/usr/lib/c++', '/usr/lib/c++', '/usr/lib/c'],
    ['/a(b)', '/a(b)', '/ab'],
    ['/a$b', '/a$b', '/a'],
    ['/^x', '/^x', '/x'],
    ['/a|b', '/a|b', '/a'],
    ['/a{1}', '/a{1}', '/a'],
    ['/a\\\\b', '/a\\b', '/ab'], // '\\' in a pattern is one literal backslash
    ['/a\\*', '/a*', '/ab'], // escaped wildcard
    ['/a[[]', '/a[', '/a'],
    ['\\+x', '/dir/+x', '/dir/x'], // escaping keeps a leading + literal
  ])('pattern %s matches %s but not %s', (pattern, yes, no) => {
    const m = matcherOf(pattern);
    expect(m(yes)).toBe('exclude');
    expect(m(no)).toBe('include');
  });

  // Wrapped in wildcards so the regex itself decides (literal patterns take a
  // string-comparison fast path and never reach it).
  it.each([
    ['.', '.'],
    ['+', '+'],
    ['(', '('],
    [')', ')'],
    ['$', '$'],
    ['^', '^'],
    ['|', '|'],
    ['{', '{'],
    ['}', '}'],
    ['\\\\', '\\'],
    [']', ']'],
  ])('in a glob, %s matches only the character %s', (pat, ch) => {
    const m = matcherOf(`/x*${pat}*y`);
    expect(m(`/x${ch}y`)).toBe('exclude');
    expect(m(`/xa${ch}by`)).toBe('exclude');
    expect(m('/xy')).toBe('include');
    expect(m('/xZy')).toBe('include');
    expect(m(`/x${ch}`)).toBe('include');
  });

  it('.* in a name is not a regex wildcard', () => {
    expect(matcherOf('/a.*')('/a.b')).toBe('exclude');
    expect(matcherOf('/a.*')('/axb')).toBe('include');
  });
});

describe('byte-wise matching', () => {
  const raw = bytes(0x2f, 0xff, 0xfe); // "/" + two bytes that are not UTF-8

  it('matches names that are not valid UTF-8', () => {
    expect(matcherOf('/??')(raw)).toBe('exclude');
    expect(matcherOf('/?')(raw)).toBe('include');
    expect(matcherOf('/*')(raw)).toBe('exclude');
    expect(matcherOf('/[!a][!a]')(raw)).toBe('exclude');
    expect(matcherOf('x')(raw)).toBe('include');
  });

  it('a pattern is UTF-8 encoded, never confused with latin1 bytes', () => {
    // 'ÿþ' in a pattern means the UTF-8 bytes c3 bf c3 be, not ff fe
    expect(matcherOf('/\u00ff\u00fe')(raw)).toBe('include');
    expect(matcherOf('/\u00ff\u00fe')(bin('/\u00ff\u00fe'))).toBe('exclude');
    const cafe = matcherOf('/café');
    expect(cafe(bin('/café'))).toBe('exclude');
    expect(cafe(bytes(0x2f, 0x63, 0x61, 0x66, 0xe9))).toBe('include'); // latin1-encoded name
  });

  it('? is one byte, so a two-byte UTF-8 character needs ??', () => {
    expect(matcherOf('/caf?')(bin('/café'))).toBe('include');
    expect(matcherOf('/caf??')(bin('/café'))).toBe('exclude');
    expect(matcherOf('/caf*')(bin('/café'))).toBe('exclude');
  });

  it('matches non-ASCII directories in deeper paths', () => {
    const m = matcherOf('/srv/données/*');
    expect(m(bin('/srv/données/x'))).toBe('exclude');
    expect(m(bin('/srv/donnees/x'))).toBe('include');
  });
});

describe('parseRule', () => {
  it('uses the default kind unless a prefix overrides it', () => {
    expect(parseRule('/x')).toEqual({ kind: 'exclude', pattern: '/x', text: '/x' });
    expect(parseRule('/x', 'include')).toEqual({ kind: 'include', pattern: '/x', text: '/x' });
    expect(parseRule('-/x', 'include')).toEqual({ kind: 'exclude', pattern: '/x', text: '-/x' });
    expect(parseRule('~/x', 'include')).toEqual({ kind: 'exclude', pattern: '/x', text: '~/x' });
    expect(parseRule('+/x', 'exclude')).toEqual({ kind: 'include', pattern: '/x', text: '+/x' });
  });

  it.each([
    ['', /empty pattern/],
    ['+', /'\+' is not followed by a pattern/],
    ['~', /'~' is not followed by a pattern/],
    ['+ /etc/hosts', /no space allowed after '\+' \(write '\+\/etc\/hosts'/],
    ['/a[b', /unterminated '\['/],
    ['/a[!', /unterminated '\['/],
    ['/a\\', /'\\' at the end of the pattern escapes nothing/],
    ['/[z-a]', /range 'z-a' is reversed/],
    ['/tmp/', /trailing '\/' is not supported; write '\/tmp'/],
    ['/', /guest root itself/],
    ['/a//b', /empty path component/],
    ['/a/../b', /'\.\.' components never occur/],
    ['/./b', /'\.' components never occur/],
    ['/[[:foo:]]', /unknown character class '\[:foo:\]'/],
    ['/[[.a.]]', /collating elements are not supported/],
    ['/[é]', /non-ASCII characters are not supported inside \[\.\.\.\]/],
    ['/a\0b', /NUL cannot occur/],
  ])('rejects %j', (text, message) => {
    let err: unknown;
    try {
      parseRule(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ExcludeSyntaxError);
    expect((err as Error).name).toBe('ExcludeSyntaxError');
    expect((err as Error).message).toMatch(message);
  });

  it('names the offending rule text in messages', () => {
    expect(() => parseRule('+/a[b')).toThrow("invalid pattern '+/a[b': unterminated '['");
  });

  it('compileRules rejects hand-built rules with bad patterns', () => {
    const bad: Rule = { kind: 'exclude', pattern: '/a[', text: '/a[' };
    expect(() => compileRules([bad])).toThrow(ExcludeSyntaxError);
  });
});

describe('parseRuleFile', () => {
  it('reads one rule per line, skipping comments and blank lines', () => {
    const contents = [
      '# private data',
      '/srv/secret',
      '',
      '   ',
      '+/etc/hosts   ',
      '  # indented comment',
      '~/root/x*\r',
      '/a#b',
      '*.log',
    ].join('\n');
    const rules = parseRuleFile(contents, 'ex.txt');
    expect(rules).toEqual([
      { kind: 'exclude', pattern: '/srv/secret', text: '/srv/secret' },
      { kind: 'include', pattern: '/etc/hosts', text: '+/etc/hosts' },
      { kind: 'exclude', pattern: '/root/x*', text: '~/root/x*' },
      { kind: 'exclude', pattern: '/a#b', text: '/a#b' },
      { kind: 'exclude', pattern: '*.log', text: '*.log' },
    ]);
    const m = compileRules(rules);
    expect(m.match('/etc/hosts')).toBe('include');
    expect(m.match('/root/xy')).toBe('exclude');
    expect(m.match('/a#b')).toBe('exclude');
  });

  it('handles a missing final newline and an empty file', () => {
    expect(parseRuleFile('/a\n/b', 'f')).toHaveLength(2);
    expect(parseRuleFile('', 'f')).toEqual([]);
  });

  it('names source:line in errors', () => {
    const contents = '# header\n/ok\n\n/bad[\n/ok2\n';
    expect(() => parseRuleFile(contents, '/etc/vunify/excludes')).toThrow(
      "/etc/vunify/excludes:4: invalid pattern '/bad[': unterminated '['",
    );
    expect(() => parseRuleFile('/x/', 'list')).toThrow(/^list:1: /);
    try {
      parseRuleFile('+', 'list');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ExcludeSyntaxError);
    }
  });
});

describe('Matcher.match', () => {
  it('excludes everything below an excluded directory without relying on pruning', () => {
    const m = compileRules(defaults());
    expect(m.match('/var/lib/dpkg/status')).toBe('exclude');
    expect(m.match('/home/alice/.profile')).toBe('exclude');
    expect(m.match('/etc/ssh/sshd_config')).toBe('exclude');
    expect(m.match('/root/.ssh/sub/file')).toBe('exclude');
    expect(m.match('/etc/gconf/gconf.xml.defaults/%gconf-tree.xml')).toBe('exclude');
    expect(m.match('/etc/gconf/schemas/sub/x.schemas')).toBe('include');
  });

  it('an include on a directory does not include what is below it', () => {
    const m = matcherOf('+/d', '/d/*', '+/d/keep');
    expect(m('/d')).toBe('include');
    expect(m('/d/x')).toBe('exclude');
    expect(m('/d/keep')).toBe('exclude'); // '/d/*' comes first
    expect(m('/d/x/y')).toBe('exclude');
  });

  it('answers the same whatever order paths are asked in', () => {
    const paths = [
      '/etc',
      '/etc/gconf',
      '/etc/gconf/schemas',
      '/etc/gconf/schemas/a.schemas',
      '/etc/gconf/other',
      '/etc/gconf/other/x',
      '/etc/termcap',
      '/var',
      '/var/lib',
      '/var/lib/x',
      '/usr',
      '/usr/lib',
      '/usr/lib/x.so',
      '/usr/share/texmf',
      '/usr/share/texmf/ls-R',
      '/usr/share/texmf/ls-R/under',
      '/root/.ssh',
      '/root/.ssh/id_rsa',
      '/root/.ssh/id_rsa/x',
      '/tmp/x',
    ];
    // Reference: the pruning walker's view, computed with fresh matchers.
    const expected = new Map(paths.map((p) => [p, candidates(defaults(), [p]).length ? 'include' : 'exclude']));
    expect(expected.get('/var/lib/x')).toBe('exclude');
    expect(expected.get('/usr/lib/x.so')).toBe('include');
    let seed = 12345;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 20; round++) {
      const m = compileRules(defaults());
      const order = [...paths, ...paths].sort(() => rand() - 0.5);
      for (const p of order) expect([p, m.match(p)]).toEqual([p, expected.get(p)]);
    }
  });

  it('rejects paths that are not rooted with /', () => {
    const m = compileRules(defaults());
    expect(() => m.match('etc/passwd')).toThrow(TypeError);
    expect(() => m.match('')).toThrow(TypeError);
  });

  it('gives the same answer when called repeatedly (no sticky state leaks)', () => {
    const m = compileRules([parseRule('*.log'), parseRule('/a/*/c')]);
    for (let i = 0; i < 3; i++) {
      expect(m.match('/x/y.log')).toBe('exclude');
      expect(m.match('/y.log.old')).toBe('include');
      expect(m.match('/a/b/c')).toBe('exclude');
      expect(m.match('/a/b/d')).toBe('include');
    }
  });
});

describe('the C matcher (native/glob.c) against excludes.ts', () => {
  // Seeded, so a failure names a case that can be replayed.
  const rng = (seed: number): (() => number) => () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  // Pieces of patterns over a small alphabet (so random paths often match),
  // with every construct the syntax has, valid or not.
  const PIECES = [
    'a', 'b', 'a', 'b', 'ab', '/', '/', '*', '*', '?', '**', '/**', '**/', '[ab]', '[!a]', '[^b]', '[a-c]',
    '[]a]', '[!]]', '[[:alpha:]]', '[[:digit:]x]', '[a-]', '[-b]', '[\\]]', '\\*', '\\[', '\\\\', '\\a', '\\/',
    'é', '\u00ff', ']', '-', 'ls-R', '.x', '[[:punct:]]', '[!a-z]',
  ];
  // Pieces that often make a pattern invalid (or are '.'/'..' components), drawn rarely.
  const BAD = ['.', '..', '[', '\\', '[z-a]', '[é]', '[[:nope:]]', '[[.a.]]', '[!/]', '[/]', '//', '\u0000'];
  // Path bytes: the alphabet plus what a hostile guest may use in names.
  const PATH_BYTES = [0x61, 0x62, 0x61, 0x62, 0x63, 0x2f, 0x2a, 0x5b, 0x5d, 0x5c, 0x2e, 0x2d, 0x3f, 0x0a, 0xe9, 0xc3, 0xa9, 0xff, 0x80];
  const pick = <T>(r: () => number, a: readonly T[]): T => a[Math.floor(r() * a.length)] as T;

  function randomPattern(r: () => number): string {
    let p = r() < 0.5 ? '/' : '';
    const n = 1 + Math.floor(r() * 6);
    for (let i = 0; i < n; i++) p += pick(r, r() < 0.03 ? BAD : PIECES);
    return p;
  }
  function randomPath(r: () => number): Buffer {
    const out = [0x2f];
    const n = 1 + Math.floor(r() * 12);
    for (let i = 0; i < n; i++) {
      // 1 in 40: any byte but NUL (no file name holds one)
      out.push(r() < 0.025 ? 1 + Math.floor(r() * 255) : pick(r, PATH_BYTES));
    }
    if (r() < 0.2) out.push(0x2f, 0x6c, 0x73, 0x2d, 0x52); // '/ls-R'
    return Buffer.from(out);
  }

  it('agrees on thousands of random rule sets and byte paths, and refuses what excludes.ts refuses', () => {
    const r = rng(13);
    let compared = 0, excluded = 0, refused = 0;
    for (let set = 0; set < 4000; set++) {
      const rules: Rule[] = [];
      const n = 1 + Math.floor(r() * 4);
      for (let i = 0; i < n; i++) {
        const pattern = randomPattern(r);
        const kind: RuleKind = r() < 0.3 ? 'include' : 'exclude';
        rules.push({ kind, pattern, text: pattern });
      }
      if (r() < 0.2) rules.push(...defaults());
      let js: Matcher | null = null;
      try {
        js = compileRulesJs(rules);
      } catch (e) {
        expect(e).toBeInstanceOf(ExcludeSyntaxError);
      }
      const [pats, inc] = nativeRules(rules);
      if (js === null) {
        refused++;
        expect(() => native.globExcluded(pats, inc, Buffer.from('/a')), JSON.stringify(rules)).toThrow(
          /invalid pattern/,
        );
        continue;
      }
      for (let k = 0; k < 12; k++) {
        const path = randomPath(r);
        const want = js.match(path.toString('latin1')) === 'exclude';
        const got = native.globExcluded(pats, inc, path);
        if (got !== want) {
          expect({ rules: rules.map((x) => `${x.kind} ${x.pattern}`), path: [...path], got }).toEqual({
            rules: rules.map((x) => `${x.kind} ${x.pattern}`), path: [...path], got: want,
          });
        }
        compared++;
        if (want) excluded++;
      }
    }
    // The generators must exercise both verdicts and the error paths.
    expect(compared).toBeGreaterThan(20000);
    expect(excluded).toBeGreaterThan(compared / 10);
    expect(compared - excluded).toBeGreaterThan(compared / 10);
    expect(refused).toBeGreaterThan(100);
  });

  it('agrees on the default rules over paths built from their own names', () => {
    const r = rng(7);
    const rules = defaults();
    const js = compileRulesJs(rules);
    const [pats, inc] = nativeRules(rules);
    const names = ['etc', 'gconf', 'schemas', 'root', '.ssh', 'id_rsa', '.gnupg', 'secring.gpg', 'var', 'tmp',
      'usr', 'ls-R', 'share', 'dev', 'home', 'passwd', 'shadow', 'termcap', '.rpmdb', 'x', 'id', 'secring'];
    let excluded = 0;
    for (let k = 0; k < 5000; k++) {
      const depth = 1 + Math.floor(r() * 5);
      const path = '/' + Array.from({ length: depth }, () => pick(r, names)).join('/');
      const want = js.match(path) === 'exclude';
      expect([path, native.globExcluded(pats, inc, Buffer.from(path, 'latin1'))]).toEqual([path, want]);
      if (want) excluded++;
    }
    expect(excluded).toBeGreaterThan(500);
    expect(excluded).toBeLessThan(4500);
  });

  it('stays linear on a hostile name (no backtracking)', () => {
    // /*a*a*a*...b against 'aaaa...' is exponential for a backtracking
    // matcher; the NFA answers at once. Compared by result only (no clocks).
    const pattern = '/' + '*a'.repeat(30) + '*b';
    const path = Buffer.from('/' + 'a'.repeat(200));
    const rules = [parseRule(pattern)];
    expect(native.globExcluded(...nativeRules(rules), path)).toBe(false);
    expect(native.globExcluded(...nativeRules(rules), Buffer.concat([path, Buffer.from('b')]))).toBe(true);
  });

  it('reads and writes nothing out of bounds on random rules and byte paths (ASan + UBSan build)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vunify-glob-'));
    try {
      const exe = path.join(dir, 'fuzz');
      execFileSync('gcc', ['-std=gnu11', '-O1', '-g', '-DVU_GLOB_STANDALONE', '-fsanitize=address,undefined',
        '-fno-sanitize-recover=all', '-Inative', 'native/glob.c', 'test/helpers/glob-fuzz.c', '-o', exe]);
      // A sanitizer finding aborts with a non-zero status, which execFileSync throws.
      const out = execFileSync(exe, ['13', '60000'], { encoding: 'utf8' });
      const [, ok, refused, excluded] = /compiled (\d+) refused (\d+) excluded (\d+)/.exec(out)!.map(Number);
      expect(ok).toBeGreaterThan(10000);
      expect(refused).toBeGreaterThan(10000);
      expect(excluded).toBeGreaterThan(1000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a path that is not rooted', () => {
    expect(() => native.globExcluded([], new Uint8Array(0), Buffer.from('a'))).toThrow(TypeError);
    expect(native.globExcluded([], new Uint8Array(0), Buffer.from('/a'))).toBe(false);
  });
});
