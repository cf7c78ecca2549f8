-- People (issue 19): the human track beside the machine one. It shares the
-- inventory, the revocation log and the audit chain, and nothing else.

-- People as the identity provider provisions them over SCIM 2.0. A leaver
-- (`active` false, or a DELETE) stays as a row: owners linked to the person
-- must still say "owner left", and logins must still be refused.
-- `user_name_key` is the lowercased userName (SCIM: userName is unique and
-- not case-exact). `resource` is the SCIM User as last written (JSON).
CREATE TABLE people (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    user_name_key TEXT NOT NULL UNIQUE,
    external_id   TEXT,
    email         TEXT,
    display_name  TEXT,
    active        BIGINT NOT NULL DEFAULT 1,
    resource      TEXT NOT NULL,
    version       BIGINT NOT NULL DEFAULT 1,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    left_at       BIGINT,
    deleted_at    BIGINT
);
CREATE INDEX people_email ON people (email);

-- SCIM groups and their members (people only).
CREATE TABLE person_groups (
    id               TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    display_name_key TEXT NOT NULL UNIQUE,
    external_id      TEXT,
    resource         TEXT NOT NULL,
    version          BIGINT NOT NULL DEFAULT 1,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_id  TEXT NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (group_id, person_id)
);
CREATE INDEX group_members_person ON group_members (person_id);

-- The person a human certificate was issued to (NULL: a machine credential,
-- or a login of someone not provisioned over SCIM).
ALTER TABLE credentials ADD COLUMN person_id TEXT;
CREATE INDEX credentials_person ON credentials (person_id);

-- An owner may be linked to the person accountable for it. When that person
-- leaves, the owner's machines keep working and are reported "owner left"
-- until transferred.
ALTER TABLE owners ADD COLUMN person_id TEXT;

-- Logins in flight: the nonce the server handed out, used once.
CREATE TABLE login_nonces (
    id          TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- Help-desk recovery of a person who lost a device or key: requested,
-- verified by an operator (with a note), approved by a second admin. While a
-- request is open the subject cannot log in; approval revokes every earlier
-- certificate of the subject and allows a new login.
CREATE TABLE recovery_requests (
    id            TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('requested', 'verified', 'approved', 'cancelled')),
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    verified_by   TEXT,
    verified_at   BIGINT,
    verify_note   TEXT,
    approved_by   TEXT,
    approved_at   BIGINT,
    closed_at     BIGINT
);
CREATE INDEX recovery_subject ON recovery_requests (subject);

-- Break-glass: pre-approved emergency logins of a subject. Each use issues a
-- very short certificate and stays a report finding until reviewed.
CREATE TABLE break_glass_grants (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    granted_by  TEXT NOT NULL,
    granted_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX break_glass_subject ON break_glass_grants (subject);
CREATE TABLE break_glass_uses (
    id           TEXT PRIMARY KEY,
    grant_id     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    credential   TEXT NOT NULL,
    used_at      BIGINT NOT NULL,
    reviewed_by  TEXT,
    reviewed_at  BIGINT,
    review_note  TEXT
);
