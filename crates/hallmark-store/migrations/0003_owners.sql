-- Accountable owners. Deactivated owners stay (their entries are orphans until transferred).
CREATE TABLE owners (
    name         TEXT PRIMARY KEY,
    contact      TEXT NOT NULL,
    description  TEXT NOT NULL,
    active       BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
