-- Batch predictions: a dataset scored by a registered model version, run as a job of kind
-- 'batch_prediction' through the same queue (fairness, leases, retries) as training.
-- The row shares its job's id. The worker records each stored output part here under the
-- job's lease fence, so the next attempt resumes at rows_done.
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('train', 'batch_prediction'));

CREATE TABLE batch_predictions (
    id              UUID PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    team_id         UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    model_id        UUID NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    -- While the job is queued or running the version's delete is refused (in_use); after
    -- that the record keeps its number and digest as lineage.
    version_id      UUID REFERENCES model_versions (id) ON DELETE SET NULL,
    model_name      TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    alias           TEXT,
    dataset_id      UUID REFERENCES datasets (id) ON DELETE SET NULL,
    -- Known once the worker has read the input.
    rows_total      BIGINT CHECK (rows_total >= 0),
    rows_done       BIGINT NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    bad_rows        BIGINT NOT NULL DEFAULT 0 CHECK (bad_rows >= 0),
    -- The first bad rows with their errors (at most 100), in row order.
    bad_row_samples JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- The stored output parts, in row order.
    parts           JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- The output's CSV header line (every part starts with it).
    header          TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX batch_predictions_team ON batch_predictions (team_id, id DESC);
CREATE INDEX batch_predictions_version ON batch_predictions (version_id);
