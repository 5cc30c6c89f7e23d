-- vunify fleet merge, step 2: sharing groups of hosts (docs/fleet.md).
-- Input: `manifest`, and `hosts` (step 1).
-- Each distinct content (content_hash, size, policy_key) once, with the
-- sorted list of hosts that hold it; then one row per such list. Σ bytes
-- over all rows is the fleet consolidated onto one host. Grouping by the
-- list first keeps the host × host matrix (step 3) small: it expands each
-- list, not each content.
WITH held AS (
  SELECT m.content_hash, m.size, m.policy_key,
         LIST(DISTINCT h.hid ORDER BY h.hid) AS hids
  FROM manifest m JOIN hosts h ON h.host = m.host
  GROUP BY m.content_hash, m.size, m.policy_key
)
SELECT hids, SUM(size) AS bytes, COUNT(*) AS contents
FROM held
GROUP BY hids
