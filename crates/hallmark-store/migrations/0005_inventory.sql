-- Every credential issued: X.509-SVID serials and JWT-SVID jtis.
CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    entry_id         TEXT NOT NULL,
    spiffe_id        TEXT NOT NULL,
    node_id          TEXT NOT NULL,
    class            TEXT NOT NULL,
    owner            TEXT NOT NULL,
    policy_version   BIGINT NOT NULL,
    evidence_digest  TEXT NOT NULL,
    issued_at        BIGINT NOT NULL,
    not_before       BIGINT NOT NULL,
    not_after        BIGINT NOT NULL,
    revoked_at       BIGINT,
    audit_seq        BIGINT NOT NULL
);
CREATE INDEX credentials_entry ON credentials (entry_id);
CREATE INDEX credentials_owner ON credentials (owner);
CREATE INDEX credentials_not_after ON credentials (not_after);
