-- Rows a platform marks withdrawn (公示状态 撤销 / 删除) are signed as REVOKEs; those of records this
-- node never held cannot be, and are counted per file instead of vanishing (rows in = accepted +
-- quarantined still holds: a withdrawn row is accepted).
ALTER TABLE ingest_files ADD COLUMN revoked integer NOT NULL DEFAULT 0;
ALTER TABLE ingest_files ADD COLUMN withdrawn_unknown integer NOT NULL DEFAULT 0;

-- The daily expiry job finds this origin's active records whose window has ended.
CREATE INDEX records_due_to_expire ON records (origin, publicity_end) WHERE status = 1;
ALTER TABLE feed_batches ADD COLUMN revoked integer NOT NULL DEFAULT 0;
ALTER TABLE feed_batches ADD COLUMN withdrawn_unknown integer NOT NULL DEFAULT 0;
