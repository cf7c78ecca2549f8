-- Hardening against the attacks of issue 12.
-- The agent SVID a node held before its latest renewal: still accepted until
-- the agent has switched to the new one (or when the renewal's answer was lost).
ALTER TABLE nodes ADD COLUMN previous_serial TEXT;
-- Admin identities: which identity created each (approvals follow that chain),
-- when it expires and when it was revoked.
ALTER TABLE admin_tokens ADD COLUMN created_by TEXT;
ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE admin_tokens ADD COLUMN revoked_at BIGINT;
-- An owner's SPIFFE-ID path scopes and the nodes its entries may name as
-- parent, newline-joined; empty when none was given.
ALTER TABLE owners ADD COLUMN paths TEXT NOT NULL DEFAULT '';
ALTER TABLE owners ADD COLUMN nodes TEXT NOT NULL DEFAULT '';
-- Signed heads of the audit chain: one per appended batch, signed with the
-- server's audit key, which is never stored here.
CREATE TABLE audit_checkpoints (
    seq        {{SEQ_PK}},
    hash       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL
);
