-- Registration entries. `selectors` is the canonical form: sorted, newline-joined.
CREATE TABLE entries (
    id          TEXT PRIMARY KEY,
    spiffe_id   TEXT NOT NULL,
    parent_id   TEXT NOT NULL,
    selectors   TEXT NOT NULL,
    owner       TEXT NOT NULL,
    class       TEXT NOT NULL,
    x509_ttl    BIGINT NOT NULL,
    jwt_ttl     BIGINT NOT NULL,
    dns_names   TEXT NOT NULL,
    hint        TEXT,
    revision    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (spiffe_id, parent_id, selectors)
);
CREATE INDEX entries_parent ON entries (parent_id);
-- The change log agents are synced from: one row per (entry, parent) touched.
CREATE TABLE entry_events (
    seq        {{AUTO_PK}},
    entry_id   TEXT NOT NULL,
    parent_id  TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE TABLE join_tokens (
    token_hash  TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    agent_id    TEXT
);
CREATE TABLE nodes (
    agent_id          TEXT PRIMARY KEY,
    attestation_type  TEXT NOT NULL,
    serial            TEXT NOT NULL,
    not_after         BIGINT NOT NULL,
    banned            BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE TABLE admin_tokens (
    token_hash  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
-- Public halves of every server's signing authorities: the shared bundle.
CREATE TABLE authorities (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    public      TEXT NOT NULL,
    not_after   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE meta (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('bundle_sequence', 0);
