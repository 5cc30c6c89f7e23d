-- vunify placement: bytes in common between two guests (docs/fleet.md).
-- Input: `guest_sets` (placement step 2). Only pairs a < b that share
-- something; the heuristic seeds its first pass with the largest pairs.
SELECT a.gid AS a, b.gid AS b, SUM(s.bytes) AS bytes
FROM guest_sets s, UNNEST(s.gids) AS a(gid), UNNEST(s.gids) AS b(gid)
WHERE a.gid < b.gid
GROUP BY a.gid, b.gid
