-- AI-agent tasks (issue 18).
--
-- Entries gain the bind mode 'task'. SQLite cannot change the CHECK of
-- `entries.bind` (0011), so the mode moves to a new column, `bound_to`, with
-- the wider CHECK; `bind` stays, unread, at its default.
ALTER TABLE entries ADD COLUMN bound_to TEXT NOT NULL DEFAULT 'none' CHECK (bound_to IN ('none', 'process', 'task'));
UPDATE entries SET bound_to = bind;

-- A task: one unit of an agent's work, for one entry bound to tasks.
-- `scope` is JSON: [{audience, actions, approval, approved_by, approved_at}].
-- The process it is bound to (`node_id`, `pid`, `start_ticks`) is set once,
-- by `hallmark task run` or `task start`; its descendants belong to it too.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL,
    objective TEXT NOT NULL,
    objective_sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    on_behalf_of TEXT,
    revoke_on_breach BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    objective_changed_at BIGINT,
    node_id TEXT,
    pid BIGINT,
    start_ticks BIGINT,
    bound_at BIGINT,
    breaches BIGINT NOT NULL DEFAULT 0,
    ended_at BIGINT,
    end_reason TEXT
);
CREATE INDEX tasks_entry ON tasks (entry_id);
CREATE INDEX tasks_process ON tasks (node_id, pid, start_ticks);

-- The task a credential was issued for (NULL: none).
ALTER TABLE credentials ADD COLUMN task_id TEXT;
CREATE INDEX credentials_task ON credentials (task_id);
