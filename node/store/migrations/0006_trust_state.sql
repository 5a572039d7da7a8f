-- The newest trust bundle this node has ever had in force, per federation.
-- A bundle older than this one (or another bundle with the same version) is
-- refused at start as well as while running: an old, validly signed bundle
-- would undo revocations.
CREATE TABLE trust_state (
    federation  text        PRIMARY KEY,
    version     bigint      NOT NULL CHECK (version >= 1),
    digest      text        NOT NULL,  -- SHA-256 hex of the bundle's content
    issued_at   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
