// The kernel's floor for a linking run's link stage on this machine: for each
// (duplicate, canonical) pair a linking run made, link the canonical to a
// temporary name beside the duplicate and rename it over the duplicate (the
// least a link that frees the duplicate's inode can cost: no confinement,
// no comparison, no journal), in P threads, the pairs split by the
// duplicate's directory so that no two threads share one. Not a peer and not
// a target: it says how much of vunify's link stage is the kernel's and the
// disk's (on an ext4 mounted -o discard, freeing an inode discards its
// blocks at once).
//
//   gcc -O2 -pthread -o /tmp/link-floor bench/link-floor.c
//   cp -a FLEET/. A/ && cp -a FLEET/. B/ && sync
//   node dist/bin.js -v --no-default-excludes --state-dir S A/* > A.out   (its "linked DUP => CANON" lines)
//   /tmp/link-floor P A B < A.out        (replays A's pairs on the fresh copy B)
//
// Session 9, fleet (69,143 pairs), fresh synced copy each: P=1 8.8 s, P=2
// 4.5 s, P=8 2.6-4.3 s, P=32 2.6 s.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <libgen.h>
typedef struct { char *dup, *can; } pair;
static pair *pairs; static int n, P;
static unsigned long hdir(const char *p) { const char *s = strrchr(p, '/'); unsigned long h = 5381; for (const char *c = p; c < s; c++) h = h * 33 + (unsigned char)*c; return h; }
static void *run(void *arg) {
  long t = (long)arg; char tmp[8192];
  for (int i = 0; i < n; i++) {
    if (hdir(pairs[i].dup) % P != (unsigned long)t) continue;
    const char *s = strrchr(pairs[i].dup, '/');
    snprintf(tmp, sizeof tmp, "%.*s/.floor.%ld", (int)(s - pairs[i].dup), pairs[i].dup, t);
    if (link(pairs[i].can, tmp)) { perror(tmp); continue; }
    if (rename(tmp, pairs[i].dup)) { perror(pairs[i].dup); unlink(tmp); }
  }
  return 0;
}
int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: link-floor P FROM TO < vunify-v-output\n"); return 2; }
  P = atoi(argv[1]); const char *from = argv[2], *to = argv[3];
  size_t cap = 1 << 17; pairs = malloc(cap * sizeof *pairs);
  char *line = 0; size_t ln = 0; ssize_t r;
  while ((r = getline(&line, &ln, stdin)) > 0) {
    if (strncmp(line, "linked ", 7)) continue;
    line[r - 1] = 0;
    char *sep = strstr(line, " => ");
    if (!sep) continue;
    *sep = 0;
    char *d = line + 7, *c = sep + 4; size_t fl = strlen(from);
    char *dd = malloc(strlen(d) + 64), *cc = malloc(strlen(c) + 64);
    sprintf(dd, "%s%s", to, d + fl); sprintf(cc, "%s%s", to, c + fl);
    pairs[n].dup = dd; pairs[n].can = cc; n++;
  }
  struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
  pthread_t th[256]; for (long t = 0; t < P; t++) pthread_create(&th[t], 0, run, (void *)t);
  for (int t = 0; t < P; t++) pthread_join(th[t], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("P=%d pairs=%d wall=%.3f s\n", P, n, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
}
