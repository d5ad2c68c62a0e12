-- The web UI's sign-in sessions (kiln-ui, kiln-api's `ui` module). The browser holds a random
-- secret in an HttpOnly cookie; this table keeps only its sha256 and the token it signed in
-- with, never the token. Revoking or deleting the token ends its sessions: the lookup joins
-- api_tokens and requires `revoked_at IS NULL`, and a deleted token cascades here.
CREATE TABLE ui_sessions (
    id_hash    BYTEA PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    token_id   UUID NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
