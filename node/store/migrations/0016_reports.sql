-- Credit reports (信用报告 / 专项信用报告): every report issued, with what it included, so that its
-- verification code can be checked and its records compared with the store later; and every view,
-- verification and issue by number, user and time (credit-use.md, Report rule 6).
CREATE SEQUENCE report_numbers;

CREATE TABLE reports (
    report_number     text PRIMARY KEY,
    verification_code text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('special', 'full')),
    subject_id        text        NOT NULL,
    issued_at         timestamptz NOT NULL,
    issued_to         text        NOT NULL,
    role              text        NOT NULL,
    period_start      date        NOT NULL,
    period_end        date        NOT NULL,
    fields            text[]      NOT NULL,
    -- One entry per included record: {"record_id", "origin", "seq", "disputed", "shown_as", "record_sha256"}.
    included          jsonb       NOT NULL,
    report_sha256     bytea       NOT NULL,
    signed_report     bytea       NOT NULL
);
CREATE INDEX reports_subject ON reports (subject_id);
CREATE INDEX reports_issued_to ON reports (issued_to, issued_at);

CREATE TABLE report_accesses (
    id            bigserial PRIMARY KEY,
    report_number text        NOT NULL REFERENCES reports (report_number),
    at            timestamptz NOT NULL DEFAULT now(),
    caller        text        NOT NULL,
    role          text        NOT NULL,
    action        text        NOT NULL CHECK (action IN ('issue', 'view', 'verify')),
    purpose       text        NOT NULL DEFAULT ''
);
CREATE INDEX report_accesses_number ON report_accesses (report_number);
