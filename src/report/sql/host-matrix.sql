-- vunify fleet merge, step 3: bytes in common between two hosts (docs/fleet.md).
-- Input: `host_sets` (step 2). The diagonal (a = b) is the host unified alone.
SELECT a.hid AS a, b.hid AS b, SUM(s.bytes) AS bytes
FROM host_sets s, UNNEST(s.hids) AS a(hid), UNNEST(s.hids) AS b(hid)
GROUP BY a.hid, b.hid
