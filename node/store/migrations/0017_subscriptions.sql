-- Authorizations subjects gave to financing platforms (信易贷): a subscription stream sends a
-- financing subscriber a subject's records only while one of these is in force for it.
-- Ending one keeps the row (who ended it, when, why): the trail of what was allowed when.
CREATE TABLE authorizations (
    grantee          text        NOT NULL,  -- the unit allowed, by its USCC
    authorization_id text        NOT NULL,  -- the granting platform's id
    subject_id       text        NOT NULL,  -- USCC or person pseudonym, as records name subjects
    scope            text        NOT NULL,  -- "stream", or a scenario code
    valid_from       date        NOT NULL,
    valid_until      date        NOT NULL CHECK (valid_until >= valid_from),
    document_sha256  bytea       NOT NULL,
    granted_at       timestamptz NOT NULL DEFAULT now(),
    granted_by       text        NOT NULL,
    ended_at         timestamptz,
    ended_by         text,
    end_reason       text,
    PRIMARY KEY (grantee, authorization_id)
);
CREATE INDEX authorizations_in_force ON authorizations (grantee, subject_id) WHERE ended_at IS NULL;
