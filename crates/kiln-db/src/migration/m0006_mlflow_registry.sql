-- MLflow's model registry, artifact proxy and MLflow 3 logged models, on Kiln's registry.
--
-- A registered model is a row of `models`, a model version a row of `model_versions`, an
-- alias a row of `model_aliases`: `GET /v1/models/{name}` shows what the MLflow client made.
-- MLflow adds tags to models and versions, descriptions to versions, and a version's MLflow
-- `source` (an artifact URI) and the run it came from.
ALTER TABLE models
    ADD COLUMN mlflow_tags JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN updated_at  TIMESTAMPTZ NOT NULL DEFAULT now();

-- A version made through MLflow from a run that is not a Kiln job's (its model exists only
-- as MLflow artifacts, e.g. `mlflow.pytorch.log_model` output) has no Kiln bundle: its
-- `bundle_key` and `bundle_sha256` are empty and its `source` says where its artifacts are.
-- Such a version is registered and listed like any other, but cannot be deployed (the
-- deployment routes refuse it, naming the reason). The native wire contract is unchanged:
-- the bundle fields stay non-null strings.
ALTER TABLE model_versions
    ADD COLUMN source         TEXT,
    ADD COLUMN mlflow_run_id  UUID REFERENCES runs (id) ON DELETE SET NULL,
    ADD COLUMN run_link       TEXT,
    ADD COLUMN description    TEXT,
    ADD COLUMN mlflow_tags    JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN logged_model_id UUID,
    ADD COLUMN updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD CONSTRAINT model_versions_bundle_or_source
        CHECK ((bundle_key <> '' AND bundle_sha256 <> '') OR (bundle_key = '' AND bundle_sha256 = '' AND source IS NOT NULL));
CREATE INDEX model_versions_mlflow_run ON model_versions (mlflow_run_id) WHERE mlflow_run_id IS NOT NULL;

-- MLflow 3's logged models (`mlflow.<flavor>.log_model`): a model's artifacts, logged under
-- `mlflow-artifacts:/{experiment_id}/models/m-{id}/artifacts`, with the run that produced
-- it. The artifacts themselves live in Kiln's artifact store under the team's prefix.
CREATE TABLE mlflow_logged_models (
    id             UUID PRIMARY KEY,
    team_id        UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    experiment_id  TEXT NOT NULL CHECK (experiment_id ~ '^[0-9]{1,19}$'),
    name           TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    model_type     TEXT,
    source_run_id  UUID REFERENCES runs (id) ON DELETE SET NULL,
    status         TEXT NOT NULL DEFAULT 'LOGGED_MODEL_PENDING'
                   CHECK (status IN ('LOGGED_MODEL_PENDING', 'LOGGED_MODEL_READY', 'LOGGED_MODEL_UPLOAD_FAILED')),
    status_message TEXT,
    tags           JSONB NOT NULL DEFAULT '{}'::jsonb,
    params         JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_by     UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE model_versions
    ADD CONSTRAINT model_versions_logged_model_fkey
        FOREIGN KEY (logged_model_id) REFERENCES mlflow_logged_models (id) ON DELETE SET NULL;
CREATE INDEX mlflow_logged_models_team ON mlflow_logged_models (team_id, experiment_id, created_at DESC);
