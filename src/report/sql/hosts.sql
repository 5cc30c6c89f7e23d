-- vunify fleet merge, step 1: one row per host (docs/fleet.md).
-- Input: `manifest`, a view over the hosts' Parquet manifests.
-- hid numbers the hosts in name order; the later steps refer to hosts by it.
-- disk_bytes: what the host's guests take today, Σ inodes × size.
-- unified_bytes: what they take after unifying the host alone, Σ size over
-- its distinct (content_hash, size, policy_key).
WITH per_content AS (
  SELECT host, content_hash, size, policy_key,
         SUM(CAST(inodes AS BIGINT)) AS inodes, SUM(CAST(paths AS BIGINT)) AS paths
  FROM manifest
  GROUP BY host, content_hash, size, policy_key
), per_guest AS (
  SELECT host, COUNT(DISTINCT guest) AS guests FROM manifest GROUP BY host
)
SELECT c.host,
       ROW_NUMBER() OVER (ORDER BY c.host) - 1 AS hid,
       MAX(g.guests) AS guests,
       SUM(c.paths) AS files,
       SUM(c.paths * c.size) AS bytes,
       SUM(c.inodes * c.size) AS disk_bytes,
       SUM(c.size) AS unified_bytes,
       COUNT(*) AS contents
FROM per_content c JOIN per_guest g ON g.host = c.host
GROUP BY c.host
