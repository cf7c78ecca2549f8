-- The audit chain: append-only; each record's hash covers the previous hash.
CREATE TABLE audit (
    seq             {{SEQ_PK}},
    at              BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    policy_version  BIGINT NOT NULL,
    details         TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
