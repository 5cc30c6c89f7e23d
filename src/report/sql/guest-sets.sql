-- vunify placement, step 2: sharing groups of guests (docs/fleet.md).
-- Input: `manifest`, and `guests` (step 1). Each distinct content once with
-- the sorted list of guests that hold it, then one row per list. Any set of
-- guests placed together needs Σ bytes over the rows whose list meets the
-- set: the exact cost the placement heuristic minimises. The guest × guest
-- overlap is the pairwise projection of these rows (guest-overlap.sql).
WITH held AS (
  SELECT m.content_hash, m.size, m.policy_key,
         LIST(DISTINCT g.gid ORDER BY g.gid) AS gids
  FROM manifest m JOIN guests g ON g.host = m.host AND g.guest = m.guest
  GROUP BY m.content_hash, m.size, m.policy_key
)
SELECT gids, SUM(size) AS bytes, COUNT(*) AS contents
FROM held
GROUP BY gids
