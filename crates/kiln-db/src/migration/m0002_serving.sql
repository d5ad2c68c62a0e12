-- Serving: a sample of every deployment's inputs and outputs, kept for the drift monitor
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
