-- Policy versions: append-only; the highest version is in force.
CREATE TABLE policies (
    version     BIGINT PRIMARY KEY,
    text        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
-- Recorded, approved, expiring permissions to break one rule.
CREATE TABLE exceptions (
    id                  TEXT PRIMARY KEY,
    entry_id            TEXT NOT NULL,
    rule                TEXT NOT NULL,
    value               TEXT NOT NULL,
    justification       TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    requested_by        TEXT NOT NULL,
    requested_at        BIGINT NOT NULL,
    approved_by         TEXT,
    approved_at         BIGINT,
    revoked_by          TEXT,
    revoked_at          BIGINT,
    expiry_recorded_at  BIGINT
);
CREATE INDEX exceptions_entry ON exceptions (entry_id);
-- Policy decisions that denied an issuance, with the determining policies.
CREATE TABLE denials (
    id               {{AUTO_PK}},
    at               BIGINT NOT NULL,
    entry_id         TEXT NOT NULL,
    spiffe_id        TEXT NOT NULL,
    action           TEXT NOT NULL,
    audience         TEXT,
    node_id          TEXT NOT NULL,
    evidence_digest  TEXT NOT NULL,
    policy_version   BIGINT NOT NULL,
    policy_ids       TEXT NOT NULL,
    reason           TEXT NOT NULL
);
CREATE INDEX denials_entry ON denials (entry_id);
-- Only a human entry may ever be attached to a recovery path.
ALTER TABLE entries ADD COLUMN recovery BIGINT NOT NULL DEFAULT 0 CHECK (recovery = 0 OR class = 'human');
