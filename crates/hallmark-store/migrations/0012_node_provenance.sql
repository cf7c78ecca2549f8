-- Node provenance (issue 17): what the node's attestor proved (its node
-- selectors, canonical `type:key:value`, one per line) and when it last
-- attested with evidence (not by renewing its agent SVID).
ALTER TABLE nodes ADD COLUMN selectors TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN attested_at BIGINT;
