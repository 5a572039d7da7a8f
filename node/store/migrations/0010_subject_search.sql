-- Search of subjects by name or code fragment (LookupService.SearchSubjects).
--
-- One row per subject: its name as published (by the latest record stored about it),
-- its type, and a key folded for matching whatever form a caller types: NFKC (full to
-- half width), traditional to simplified, whitespace removed, upper case
-- (credex.node.store.events.search_key). events.upsert_records keeps it in step with
-- records. Trigram indexes on the key and the code answer both similarity and
-- substring (LIKE) searches. Which records a caller may see is decided at query time
-- from records, never from this table.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE subjects (
    subject_id   text     PRIMARY KEY,
    subject_type smallint NOT NULL,  -- credex.v1.SubjectType
    name         text     NOT NULL,
    name_key     text     NOT NULL
);
CREATE INDEX subjects_name_key_trgm ON subjects USING gin (name_key gin_trgm_ops);
CREATE INDEX subjects_id_trgm ON subjects USING gin (subject_id gin_trgm_ops);
