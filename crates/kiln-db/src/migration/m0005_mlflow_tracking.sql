-- MLflow tracking. A tracked MLflow run IS a Kiln run: its row is in `runs` (name, params,
-- native status, start and end times) and its points in `metrics`. These tables keep only
-- what MLflow has and Kiln's run has not: experiments, a run's experiment, lifecycle stage,
-- the MLflow states the native status cannot say, user, tags, dataset inputs and the
-- logged models a run outputs. A Kiln run without an `mlflow_runs` row (a Kiln job, a run
-- made through /v1/runs) is an active run of the team's experiment 0.

-- Experiment ids come from one sequence (unique across teams); 0 is every team's
-- "Default", made for each team by the trigger below.
CREATE SEQUENCE mlflow_experiment_ids START 1;

CREATE TABLE mlflow_experiments (
    team_id         UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    id              BIGINT NOT NULL,
    name            TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, id),
    UNIQUE (team_id, name)
);

CREATE TABLE mlflow_experiment_tags (
    team_id       UUID NOT NULL,
    experiment_id BIGINT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (team_id, experiment_id, key),
    FOREIGN KEY (team_id, experiment_id) REFERENCES mlflow_experiments (team_id, id) ON DELETE CASCADE
);

INSERT INTO mlflow_experiments (team_id, id, name) SELECT id, 0, 'Default' FROM teams;

CREATE FUNCTION mlflow_default_experiment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mlflow_experiments (team_id, id, name) VALUES (NEW.id, 0, 'Default');
    RETURN NEW;
END
$$;
CREATE TRIGGER teams_mlflow_default_experiment AFTER INSERT ON teams
    FOR EACH ROW EXECUTE FUNCTION mlflow_default_experiment();

CREATE TABLE mlflow_runs (
    run_id          UUID PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    team_id         UUID NOT NULL,
    experiment_id   BIGINT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),
    -- Only the MLflow states the native status (running/succeeded/failed) cannot say; NULL
    -- means "as the native status or the job's state says".
    status          TEXT CHECK (status IN ('SCHEDULED', 'KILLED')),
    user_id         TEXT NOT NULL DEFAULT '',
    FOREIGN KEY (team_id, experiment_id) REFERENCES mlflow_experiments (team_id, id) ON DELETE CASCADE
);
CREATE INDEX mlflow_runs_experiment ON mlflow_runs (team_id, experiment_id);

-- Run tags. `mlflow.runName` is never stored: it is the run's name (`runs.name`).
CREATE TABLE mlflow_run_tags (
    run_id UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Datasets a run used (log-inputs), one row per (name, digest, context tag).
CREATE TABLE mlflow_run_inputs (
    run_id      UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    context     TEXT NOT NULL DEFAULT '',
    dataset     JSONB NOT NULL,
    tags        JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name, digest, context)
);

-- Logged models a run produced (runs/outputs) and consumed (log-inputs `models`); the
-- logged models themselves are the registry's.
CREATE TABLE mlflow_run_models (
    run_id    UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('input', 'output')),
    model_id  TEXT NOT NULL,
    step      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, direction, model_id)
);

-- A Kiln run as MLflow sees it: what searches filter and sort on.
CREATE VIEW mlflow_run_view AS
SELECT
    r.id AS run_uuid,
    replace(r.id::text, '-', '') AS run_id,
    r.team_id,
    r.job_id,
    r.name AS run_name,
    r.params,
    coalesce(m.experiment_id, 0) AS experiment_id,
    coalesce(m.lifecycle_stage, 'active') AS lifecycle_stage,
    CASE
        WHEN m.status IS NOT NULL THEN m.status
        WHEN j.state = 'queued' THEN 'SCHEDULED'
        WHEN j.state = 'running' THEN 'RUNNING'
        WHEN j.state = 'succeeded' THEN 'FINISHED'
        WHEN j.state = 'failed' THEN 'FAILED'
        WHEN j.state = 'cancelled' THEN 'KILLED'
        WHEN r.status = 'running' THEN 'RUNNING'
        WHEN r.status = 'succeeded' THEN 'FINISHED'
        ELSE 'FAILED'
    END AS status,
    (extract(epoch FROM coalesce(j.started_at, r.created_at)) * 1000)::bigint AS start_time,
    (extract(epoch FROM coalesce(r.finished_at, j.finished_at)) * 1000)::bigint AS end_time,
    coalesce(m.user_id, '') AS user_id,
    'mlflow-artifacts:/' || coalesce(m.experiment_id, 0) || '/' || replace(r.id::text, '-', '') || '/artifacts'
        AS artifact_uri,
    j.state AS job_state,
    j.spec -> 'model' ->> 'type' AS job_model_type
FROM runs r
LEFT JOIN mlflow_runs m ON m.run_id = r.id
LEFT JOIN jobs j ON j.id = r.job_id;
