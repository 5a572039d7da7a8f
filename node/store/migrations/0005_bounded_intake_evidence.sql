-- Evidence of rejected messages that cannot fill the disk and cannot stop intake.
-- Each row keeps the first bytes of one message with the size and SHA-256 of the
-- whole; identical rejections (same origin, reason and key) within a window are
-- one row with a repeat count; rows beyond a per-origin budget are trimmed, oldest
-- first. The counts in intake_counters are never trimmed.

UPDATE intake_rejections SET key_id = '' WHERE key_id IS NULL;
ALTER TABLE intake_rejections ALTER COLUMN key_id SET DEFAULT '';
ALTER TABLE intake_rejections ALTER COLUMN key_id SET NOT NULL;
ALTER TABLE intake_rejections ADD COLUMN size integer;      -- bytes of the whole message
ALTER TABLE intake_rejections ADD COLUMN digest bytea;      -- SHA-256 of the whole message
ALTER TABLE intake_rejections ADD COLUMN repeats bigint NOT NULL DEFAULT 1 CHECK (repeats > 0);
ALTER TABLE intake_rejections ADD COLUMN last_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX intake_rejections_group ON intake_rejections (origin, reason, key_id, id);
CREATE INDEX intake_rejections_origin ON intake_rejections (origin, id);
