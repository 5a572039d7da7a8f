-- Feeds: platforms read by HTTP paging or 前置库 polling rather than files. Each page or
-- poll is one batch, taken in within one transaction together with the cursor that
-- moves past it, so a batch is taken in exactly once whatever happens around it.

CREATE TABLE feed_batches (
    id            bigserial PRIMARY KEY,
    feed          text        NOT NULL,
    locator       text        NOT NULL,   -- cursor or watermark the batch started from
    rows_in       integer     NOT NULL,
    accepted      integer     NOT NULL,
    quarantined   integer     NOT NULL,
    new_records   integer     NOT NULL,
    corrected     integer     NOT NULL,
    unchanged     integer     NOT NULL,
    first_seq     bigint,
    last_seq      bigint,
    taken_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (rows_in = accepted + quarantined)
);
CREATE INDEX feed_batches_feed ON feed_batches (feed);

-- Where each feed (and each polled table of a feed) has got to.
CREATE TABLE feed_cursors (
    feed        text        NOT NULL,
    part        text        NOT NULL,
    position    jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feed, part)
);

ALTER TABLE quarantine ALTER COLUMN content_hash DROP NOT NULL;
ALTER TABLE quarantine ADD COLUMN feed_batch bigint REFERENCES feed_batches (id);
ALTER TABLE quarantine ADD CONSTRAINT quarantine_has_a_source CHECK (content_hash IS NOT NULL OR feed_batch IS NOT NULL);
