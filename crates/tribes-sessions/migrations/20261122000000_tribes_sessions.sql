-- tribes-sessions: the table of PostgresStore, one row per session.
--
-- PostgresStore::connect and PostgresStore::migrate run this file (it is idempotent and
-- runs under an advisory lock, so many nodes may start at once). Applications that manage
-- their schema with sqlx migrations or another tool may copy it into their own migrations.
--
-- `record` holds the whole session in tribes-sessions' checksummed record layout (magic,
-- format, version, times, id, data); `version` and `expires_at_ms` repeat what queries need:
-- the optimistic-concurrency check on save and the expiry sweep.
CREATE TABLE IF NOT EXISTS tribes_sessions (
    id            TEXT        PRIMARY KEY,
    version       BIGINT      NOT NULL,
    expires_at_ms BIGINT      NOT NULL,
    record        BYTEA       NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- delete_expired: DELETE ... WHERE expires_at_ms <= $now
CREATE INDEX IF NOT EXISTS tribes_sessions_expires_at_ms ON tribes_sessions (expires_at_ms);
