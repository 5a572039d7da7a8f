-- The tamper-evident side of each origin's log: Merkle leaf hashes, the
-- origins' signed checkpoints, and alarms raised on evidence of equivocation.

ALTER TABLE events ADD COLUMN leaf_hash bytea;
UPDATE events SET leaf_hash = sha256('\x00'::bytea || envelope);
ALTER TABLE events ALTER COLUMN leaf_hash SET NOT NULL;

-- Every distinct checkpoint seen of every origin, as the signed note text.
-- state: 'own' (this node signed it), 'verified' (our tree has the same root at
-- that size), 'pending' (we do not hold that many events yet), 'conflict'.
CREATE TABLE checkpoints (
    origin      text        NOT NULL,
    size        bigint      NOT NULL CHECK (size >= 0),
    root        bytea       NOT NULL,
    note        text        NOT NULL,
    state       text        NOT NULL,
    source      text        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, size, root)
);
CREATE INDEX checkpoints_latest ON checkpoints (origin, size DESC);

-- Evidence that an origin's log cannot be trusted as it stands. While an alarm
-- is open, nothing more of that origin is applied; an operator clears it.
CREATE TABLE alarms (
    id          bigserial PRIMARY KEY,
    origin      text        NOT NULL,
    kind        text        NOT NULL,
    message     text        NOT NULL,
    evidence    jsonb       NOT NULL,
    raised_at   timestamptz NOT NULL DEFAULT now(),
    cleared_at  timestamptz,
    cleared_by  text,
    clear_note  text
);
CREATE INDEX alarms_open ON alarms (origin) WHERE cleared_at IS NULL;

ALTER TABLE relay_outbox ADD COLUMN published_checkpoint bigint NOT NULL DEFAULT 0;
-- Where the newest published batch landed, to check later that the broker still has it.
ALTER TABLE relay_outbox ADD COLUMN sentinel_partition integer;
ALTER TABLE relay_outbox ADD COLUMN sentinel_offset bigint;
ALTER TABLE relay_outbox ADD COLUMN sentinel_event_id text;
