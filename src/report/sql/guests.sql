-- vunify placement, step 1: one row per guest (docs/fleet.md).
-- Input: `manifest`. A guest is (host, guest); gid numbers them in that order.
-- unified_bytes: what the guest takes after unifying it alone.
WITH per_content AS (
  SELECT DISTINCT host, guest, content_hash, size, policy_key FROM manifest
)
SELECT host, guest,
       ROW_NUMBER() OVER (ORDER BY host, guest) - 1 AS gid,
       SUM(size) AS unified_bytes
FROM per_content
GROUP BY host, guest
