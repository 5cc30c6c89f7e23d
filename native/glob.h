/*
 * The exclude matcher in C: the same byte-wise semantics as compileRule in
 * src/pipeline/excludes.ts (which stays the reference, and parses and
 * validates every rule before it gets here), for the native walk, which
 * decides excludes on a name before any statx, on several threads.
 *
 * Why not a regex library: a guest controls the path, so matching must be
 * bounded (no backtracking blow-up whatever the name), and thread-safe
 * without locks or allocation per call. The rules are compiled once; a
 * match is one pass over the path with a set of NFA states (see glob.c):
 * time bounded by path length x pattern length, no backtracking.
 *
 * Pure C: no Node headers, so the walk's threads may call it freely.
 */
#ifndef VUNIFY_GLOB_H
#define VUNIFY_GLOB_H

#include <stddef.h>

struct vu_rules;

/*
 * Compiles n rules. patterns[i] is lens[i] bytes (the UTF-8 bytes of
 * Rule.pattern, without the +/-/~ prefix; no NUL needed), include[i] is 1
 * for an include rule ('+'), 0 for an exclude. Returns NULL on a pattern it
 * cannot compile (excludes.ts should have refused it first) or on ENOMEM,
 * with a message in err (always NUL-terminated when errlen > 0).
 * n == 0 is valid: nothing is ever excluded.
 */
struct vu_rules *vu_rules_new(const char *const *patterns, const size_t *lens,
                              const unsigned char *include, size_t n, char *err, size_t errlen);

void vu_rules_free(struct vu_rules *);

/*
 * 1 when the first rule that matches `path` (bytes "/a/b/name" from the
 * guest root, not NUL-terminated) at its own level, whose last component
 * starts at offset `base`, excludes it; 0 when the first match includes it
 * or nothing matches. Ancestors are NOT consulted: a walker that prunes
 * excluded directories gets the full verdict by asking once per entry.
 * Thread-safe, allocates nothing.
 */
int vu_rules_excludes(const struct vu_rules *, const char *path, size_t len, size_t base);

#endif
