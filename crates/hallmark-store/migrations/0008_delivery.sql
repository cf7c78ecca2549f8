-- Where the workload holding a credential reported delivering it (for
-- `hallmark helper`: `files:/dir`), and when. Reported on the agent's socket
-- by the attested holder and checked by the agent and the server; see
-- Store::record_delivery.
ALTER TABLE credentials ADD COLUMN delivered_to TEXT;
ALTER TABLE credentials ADD COLUMN delivered_at BIGINT;
