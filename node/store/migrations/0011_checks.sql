-- Checks (逢办必查 / 联合奖惩): who checked which subjects for what, what each was told, and the feedback.
CREATE TABLE checks (
    check_id        uuid PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    caller          text NOT NULL,
    role            text NOT NULL,
    requesting_unit text NOT NULL,
    scenario        text NOT NULL,
    purpose         text NOT NULL,
    legal_basis     text NOT NULL,
    subjects        integer NOT NULL
);
CREATE INDEX checks_at ON checks (at);

CREATE TABLE check_answers (
    check_id    uuid NOT NULL REFERENCES checks (check_id),
    subject_id  text NOT NULL,
    measure_ids text[] NOT NULL,
    PRIMARY KEY (check_id, subject_id)
);

CREATE TABLE check_feedback (
    check_id         uuid NOT NULL,
    subject_id       text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    caller           text NOT NULL,
    measures_applied text[] NOT NULL,
    outcome          text NOT NULL,
    reason           text NOT NULL,
    amount_yuan      numeric(20, 2),
    basis            text NOT NULL,
    district_code    text NOT NULL,
    department       text NOT NULL,
    applied_on       date NOT NULL,
    UNIQUE (check_id, subject_id),
    FOREIGN KEY (check_id, subject_id) REFERENCES check_answers (check_id, subject_id)
);
