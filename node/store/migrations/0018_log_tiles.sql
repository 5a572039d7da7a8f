-- Every origin's Merkle tree as C2SP tlog-tiles: one row per tile, its hashes (32 bytes each)
-- at the size the tiles cover. A partial tile at the right edge is rewritten as it grows; a
-- full tile (256 hashes) never changes again. Written in the transaction that moves the
-- origin's watermark, so the tiles always equal the events they cover.
CREATE TABLE log_tiles (
    origin   text     NOT NULL,
    level    smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx      bigint   NOT NULL CHECK (idx >= 0),
    hashes   bytea    NOT NULL CHECK (octet_length(hashes) BETWEEN 32 AND 8192 AND octet_length(hashes) % 32 = 0),
    -- A full tile's inner hashes (heights 1..7 of the subtree it spans: 254 hashes), so that a
    -- proof reads them instead of hashing; not part of the spec's tiles, never served.
    interior bytea    CHECK (interior IS NULL OR (octet_length(interior) = 8128 AND octet_length(hashes) = 8192)),
    PRIMARY KEY (origin, level, idx)
);

-- How many leaves of the origin's log the tiles cover. It equals contiguous_seq once the
-- events a store held before tiles existed are tiled (by the node's tiling job, in batches).
ALTER TABLE origin_progress ADD COLUMN tiled_seq bigint NOT NULL DEFAULT 0;
