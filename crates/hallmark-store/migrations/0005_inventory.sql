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
-- Only the index revocation by entry needs: every other index would be paid
-- for on each issuance. Listing by owner, node or expiry, pruning and reports
-- scan (ordered by the time-sorted primary key).
CREATE INDEX credentials_entry ON credentials (entry_id);
