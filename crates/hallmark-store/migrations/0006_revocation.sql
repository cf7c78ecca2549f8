-- Revoked entries stay in the registry as a record but are never served again.
ALTER TABLE entries ADD COLUMN revoked_at BIGINT;
ALTER TABLE entries ADD COLUMN revoke_reason TEXT;
-- Which authority signed each credential (X.509 CA id or JWT kid), and why it was revoked.
ALTER TABLE credentials ADD COLUMN authority_id TEXT NOT NULL DEFAULT '';
ALTER TABLE credentials ADD COLUMN revoke_reason TEXT;
ALTER TABLE nodes ADD COLUMN authority_id TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN banned_at BIGINT;
ALTER TABLE nodes ADD COLUMN ban_reason TEXT;
-- The revocation log, in commit order: every revoked X.509 serial and JWT jti,
-- and every node ban. Agents and CRLs are fed from it.
CREATE TABLE revocations (
    seq           {{AUTO_PK}},
    kind          TEXT NOT NULL,
    id            TEXT NOT NULL,
    authority_id  TEXT NOT NULL,
    not_after     BIGINT NOT NULL,
    at            BIGINT NOT NULL,
    reason        TEXT NOT NULL
);
CREATE INDEX revocations_live ON revocations (not_after);
-- Authority lifecycle: which server holds the key, prepared / active / old /
-- revoked, tainted or not, and the CRL the holder signs for it.
ALTER TABLE authorities ADD COLUMN server_id TEXT NOT NULL DEFAULT '';
ALTER TABLE authorities ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE authorities ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE authorities ADD COLUMN tainted_at BIGINT;
ALTER TABLE authorities ADD COLUMN crl TEXT;
