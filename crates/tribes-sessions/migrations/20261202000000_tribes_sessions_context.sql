-- tribes-sessions: sessions namespaced per context (one application's sessions).
--
-- Two applications sharing one database keep their sessions apart: every row belongs to one
-- context, and the primary key is (context, id). Rows written before this migration get the
-- context '' (what `PostgresStore::connect` gives before `with_context`); a SessionManager
-- uses its context name, so move them once with
--   UPDATE tribes_sessions SET context = 'my-app' WHERE context = '';
-- Idempotent: running it again, or from many nodes at once (under the advisory lock of
-- PostgresStore::migrate), changes nothing.
ALTER TABLE tribes_sessions ADD COLUMN IF NOT EXISTS context TEXT NOT NULL DEFAULT '';

DO $$
BEGIN
    -- The primary key of the first migration was (id) alone: widen it to (context, id).
    IF EXISTS (
        SELECT 1 FROM pg_index
        WHERE indrelid = 'tribes_sessions'::regclass AND indisprimary AND indnatts = 1
    ) THEN
        ALTER TABLE tribes_sessions DROP CONSTRAINT tribes_sessions_pkey;
        ALTER TABLE tribes_sessions ADD CONSTRAINT tribes_sessions_pkey PRIMARY KEY (context, id);
    END IF;
END
$$;

-- delete_expired: DELETE ... WHERE context = $1 AND expires_at_ms <= $now
CREATE INDEX IF NOT EXISTS tribes_sessions_context_expires_at_ms ON tribes_sessions (context, expires_at_ms);
DROP INDEX IF EXISTS tribes_sessions_expires_at_ms;
