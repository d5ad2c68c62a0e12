-- Hyperparameter search. A study is a base job spec, a search space and an objective; the
-- scheduler in kiln-api proposes its trials as ordinary training jobs of the team (one row
-- in study_trials each, inserted in the same transaction as its job, so a crash never
-- proposes a trial twice or loses one). A trial stopped early ends in the new job state
-- 'pruned', keeping its checkpoint; ASHA may promote it back to 'queued' to resume.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'pruned'));
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check
    CHECK (outcome IN ('succeeded', 'failed', 'retrying', 'lease_expired', 'released',
                       'cancelled', 'pruned'));

CREATE TABLE studies (
    id          UUID PRIMARY KEY,
    team_id     UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    -- The accepted StudySpec (kiln-types), defaults filled in.
    spec        JSONB NOT NULL,
    -- What the base spec's ids resolved to (the dataset's key and digest): every trial's.
    inputs      JSONB NOT NULL,
    state       TEXT NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'succeeded', 'stopped', 'failed')),
    reason      TEXT,
    created_by  UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX studies_team ON studies (team_id, created_at DESC);
CREATE INDEX studies_running ON studies (id) WHERE state = 'running';

CREATE TABLE study_trials (
    study_id   UUID NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    number     INTEGER NOT NULL CHECK (number >= 0),
    job_id     UUID NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
    params     JSONB NOT NULL,
    -- Times ASHA resumed the trial from its checkpoint after pausing it.
    promotions INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (study_id, number)
);

-- MLflow sees a pruned trial's run as KILLED (as a cancelled job's).
CREATE OR REPLACE VIEW mlflow_run_view AS
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
        WHEN j.state IN ('cancelled', 'pruned') THEN 'KILLED'
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
