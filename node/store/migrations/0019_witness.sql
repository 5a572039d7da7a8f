-- Witnesses (C2SP tlog-witness). A witness keeps, per log it witnesses, the latest checkpoint it
-- cosigned: it cosigns a newer one only with a consistency proof from this one, and moves it only
-- by compare-and-set on (size, root), so two requests can never both advance it from one state.
CREATE TABLE witness_state (
    log_origin   text        PRIMARY KEY,
    size         bigint      NOT NULL CHECK (size >= 0),
    root         bytea       NOT NULL CHECK (octet_length(root) = 32),
    note         text        NOT NULL,  -- the checkpoint as cosigned: the log's signature and ours
    cosigned_at  timestamptz NOT NULL DEFAULT now()
);

-- The origin's side: which witness cosigned which of its checkpoints (the lines are also merged into
-- checkpoints.note, which is what is served). The largest size per witness is the old size of the
-- next request to it.
CREATE TABLE checkpoint_cosignatures (
    origin       text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    witness      text        NOT NULL,
    line         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, size, witness)
);
CREATE INDEX checkpoint_cosignatures_by_witness ON checkpoint_cosignatures (origin, witness, size DESC);
