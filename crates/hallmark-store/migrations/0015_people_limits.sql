-- Issue 19, after review: who asked for each login nonce (its address), so
-- that one source cannot take every slot of the logins in flight; and at
-- most one open recovery request per person, enforced by the database (two
-- help-desk calls at once on PostgreSQL could otherwise both file one).
ALTER TABLE login_nonces ADD COLUMN source TEXT NOT NULL DEFAULT '';
CREATE INDEX login_nonces_source ON login_nonces (source);
CREATE UNIQUE INDEX recovery_one_open ON recovery_requests (subject) WHERE state IN ('requested', 'verified');
