-- What an entry's credentials belong to: 'none' (the workload's evidence, the
-- default) or 'process' (the one process instance that asked; its end
-- withdraws and revokes them, issue 16).
ALTER TABLE entries ADD COLUMN bind TEXT NOT NULL DEFAULT 'none' CHECK (bind IN ('none', 'process'));
