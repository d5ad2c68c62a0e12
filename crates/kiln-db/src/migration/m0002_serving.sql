-- Serving. (1) A sample of every deployment's inputs and outputs, kept for the drift monitor
-- (population stability index against the bundle's training statistics) and for debugging.
-- Deleting a deployment deletes its row (the audit log keeps the history), so a name can
-- be reused; its samples go with it.

CREATE TABLE prediction_samples (
    id            BIGSERIAL PRIMARY KEY,
    deployment_id UUID NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    ts            TIMESTAMPTZ NOT NULL DEFAULT now(),
    input         JSONB NOT NULL,
    output        JSONB NOT NULL
);

CREATE INDEX prediction_samples_recent ON prediction_samples (deployment_id, id DESC);

-- Which model versions serving must load is resolved through aliases; this index answers
-- "which deployments follow model M's alias A" when an alias moves.
CREATE INDEX deployments_following ON deployments (model_id, alias) WHERE alias IS NOT NULL;

-- (2) Token revocations are announced, so API replicas that cache authenticated tokens forget a
-- revoked (or deleted) token at once: NOTIFY kiln_tokens with its id.
CREATE FUNCTION kiln_notify_token_revoked() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('kiln_tokens', OLD.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER kiln_token_revoked
    AFTER UPDATE OF revoked_at ON api_tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION kiln_notify_token_revoked();

CREATE TRIGGER kiln_token_deleted
    AFTER DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION kiln_notify_token_revoked();
