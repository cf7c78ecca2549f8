-- Each distinct workload evidence set, stored once under its digest: the
-- `evidence_digest` that inventory rows and audit records carry. The digest
-- is SHA-256 over the selectors' text and, when known, the process facts
-- (hallmark_core::evidence_digest_of); `audit verify` recomputes it. Never
-- pruned: the audit records naming a set outlive the credentials.
CREATE TABLE evidence (
    digest       TEXT PRIMARY KEY,
    -- Every selector, `type:key:value`, sorted, each ended by a newline.
    selectors    TEXT NOT NULL,
    -- The process the selectors were read from: all three NULL when the agent did not say.
    pid          BIGINT,
    start_ticks  BIGINT,
    started_at   BIGINT
);
