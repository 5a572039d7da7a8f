-- Objections and repairs as cases (credit-use.md, Repair and Objection). A node holds the cases
-- filed on it and, as origin, the cases about its records; the case id is derived from
-- (filing node, filer, request id), so a retry or a second delivery finds the same row.
CREATE TABLE cases (
    case_id         text        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('objection', 'repair')),
    record_id       text        NOT NULL,
    record_origin   text        NOT NULL,
    subject_id      text        NOT NULL,
    filed_on        text        NOT NULL,
    filer           text        NOT NULL,
    on_behalf_of    text        NOT NULL,
    request_id      text        NOT NULL,
    content_digest  bytea       NOT NULL,
    filing          bytea       NOT NULL,   -- the credex.v1.CaseFiling as filed
    at_origin       boolean     NOT NULL,   -- this node is the record's origin and decides the case
    state           text        NOT NULL,
    outcome         text        NOT NULL DEFAULT '',
    eligibility     text        NOT NULL DEFAULT '',
    filed_at        timestamptz NOT NULL,
    received_on     date,                   -- the day the origin took the case in (its clock)
    due_on          date,                   -- the current deadline, on the official calendar
    extended_days   integer     NOT NULL DEFAULT 0,
    decided_on      date,
    closed_at       timestamptz,
    repair_seq      bigint,                 -- the REPAIR event of an approved repair
    decision        bytea,                  -- the signed 修复决定书 (canonical envelope bytes)
    delivery        text        NOT NULL DEFAULT '',
    origin_version  integer     NOT NULL DEFAULT 0,  -- on the filing node: the origin's status held
    UNIQUE (filed_on, filer, request_id)
);
CREATE INDEX cases_open ON cases (state) WHERE closed_at IS NULL;

-- The file of each case: every step with its actor, opinion and time.
CREATE TABLE case_steps (
    case_id  text        NOT NULL REFERENCES cases (case_id),
    step     integer     NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,
    stage    text        NOT NULL,
    state    text        NOT NULL,
    opinion  text        NOT NULL DEFAULT '',
    PRIMARY KEY (case_id, step)
);

-- Signed case messages waiting for their target node to acknowledge them; kept after delivery.
-- A case's status has one row per target, replaced by the newest status while undelivered.
CREATE TABLE case_outbox (
    id              bigserial   PRIMARY KEY,
    case_id         text        NOT NULL,
    purpose         text        NOT NULL CHECK (purpose IN ('filing', 'receipt', 'status')),
    target          text        NOT NULL,   -- origin code of the node to deliver to
    envelope        bytea       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL DEFAULT '',
    delivered_at    timestamptz,
    refused         text        NOT NULL DEFAULT '',  -- the target's definitive refusal, not retried
    UNIQUE (case_id, purpose, target)
);
CREATE INDEX case_outbox_due ON case_outbox (next_attempt_at) WHERE delivered_at IS NULL AND refused = '';

-- At the origin: which peers confirmed that their verified copy of this log holds a repair.
CREATE TABLE repair_confirmations (
    case_id          text        NOT NULL REFERENCES cases (case_id),
    peer             text        NOT NULL,
    seq              bigint      NOT NULL,
    checkpoint_size  bigint      NOT NULL,
    confirmed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, peer)
);

-- On a peer: how far each other origin's log has been looked through for REPAIR events to confirm
-- (up to a verified checkpoint), so that each event is looked at once, by a range of the primary key.
CREATE TABLE repair_receipt_marks (
    origin       text   PRIMARY KEY,
    scanned_seq  bigint NOT NULL
);
