-- Web console sessions and one-time login links, by the SHA-256 of their secret.
CREATE TABLE sessions (
    hash       text PRIMARY KEY,
    person     text NOT NULL,
    last_seen  timestamptz NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen);
