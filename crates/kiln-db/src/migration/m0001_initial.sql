-- Kiln's initial schema. Every state column is TEXT with a CHECK so that the spelling in
-- kiln-types is the one source of truth and migrations stay plain SQL.

CREATE TABLE teams (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    max_running_jobs INTEGER NOT NULL DEFAULT 4 CHECK (max_running_jobs > 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    team_id      UUID REFERENCES teams (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'maintainer', 'member', 'viewer')),
    -- sha256 of the secret; the secret itself is shown once and never stored.
    token_hash   BYTEA NOT NULL UNIQUE,
    -- The first characters of the token, to recognise it in listings.
    prefix       TEXT NOT NULL,
    created_by   UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    -- Platform tokens are admins and belong to no team; team tokens are never admins.
    CHECK ((role = 'admin') = (team_id IS NULL))
);
CREATE INDEX api_tokens_team ON api_tokens (team_id);

CREATE TABLE datasets (
    id          UUID PRIMARY KEY,
    team_id     UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    format      TEXT NOT NULL CHECK (format IN ('csv', 'npz', 'torchscript')),
    sha256      TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  BIGINT NOT NULL CHECK (size_bytes >= 0),
    storage_key TEXT NOT NULL,
    schema      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_by  UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (team_id, name, version)
);

CREATE TABLE workers (
    id                UUID PRIMARY KEY,
    host              TEXT NOT NULL,
    pid               INTEGER,
    device            TEXT NOT NULL CHECK (device IN ('cpu', 'cuda')),
    version           TEXT NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    current_job_id    UUID,
    stopped_at        TIMESTAMPTZ
);

CREATE TABLE jobs (
    id                  UUID PRIMARY KEY,
    team_id             UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    kind                TEXT NOT NULL DEFAULT 'train',
    spec                JSONB NOT NULL,
    -- What the spec's ids resolved to at submission (dataset and script keys, digests):
    -- the worker needs nothing but the job row and the artifact store.
    inputs              JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Scheduling.
    priority            INTEGER NOT NULL DEFAULT 0,
    state               TEXT NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    device              TEXT NOT NULL DEFAULT 'any' CHECK (device IN ('any', 'cpu', 'cuda')),
    run_after           TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Budget: attempts counted against max_attempts (a graceful release does not count).
    attempt             INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    -- Lease: every claim bumps lease_epoch; every worker write is fenced by it.
    lease_epoch         BIGINT NOT NULL DEFAULT 0,
    lease_owner         UUID,
    lease_expires_at    TIMESTAMPTZ,
    heartbeat_at        TIMESTAMPTZ,
    -- Control and progress.
    cancel_requested_at TIMESTAMPTZ,
    checkpoint_key      TEXT,
    checkpoint_epoch    INTEGER,
    resumed_from_epoch  INTEGER,
    progress            JSONB,
    error               TEXT,
    result              JSONB,
    ran_on_device       TEXT,
    -- Idempotency: the same key and body again answer the same job.
    idempotency_key     TEXT,
    request_hash        TEXT,
    -- W3C trace context of the request that submitted the job.
    trace_context       TEXT,
    created_by          UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (team_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim query's path: queued jobs by priority, then age.
CREATE INDEX jobs_claimable ON jobs (priority DESC, created_at, id) WHERE state = 'queued';
-- The rescuer's path: running jobs by lease expiry.
CREATE INDEX jobs_running_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_team_state ON jobs (team_id, state, created_at DESC);

CREATE TABLE job_attempts (
    id           BIGSERIAL PRIMARY KEY,
    job_id       UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    lease_epoch  BIGINT NOT NULL,
    attempt      INTEGER NOT NULL,
    worker_id    UUID NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at     TIMESTAMPTZ,
    outcome      TEXT CHECK (outcome IN
                 ('succeeded', 'failed', 'retrying', 'lease_expired', 'released', 'cancelled')),
    error        TEXT,
    UNIQUE (job_id, lease_epoch)
);

CREATE TABLE job_events (
    id      BIGSERIAL PRIMARY KEY,
    job_id  UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER,
    ts      TIMESTAMPTZ NOT NULL DEFAULT now(),
    level   TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- A tracked run: a Kiln job (same id) or training that happens outside Kiln.
CREATE TABLE runs (
    id          UUID PRIMARY KEY,
    team_id     UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    job_id      UUID REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    params      JSONB NOT NULL DEFAULT '{}'::jsonb,
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    created_by  UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE INDEX runs_team ON runs (team_id, created_at DESC);

-- Metric points of runs and jobs. Append-only and hot: no surrogate key.
CREATE TABLE metrics (
    run_id UUID NOT NULL,
    name   TEXT NOT NULL,
    step   BIGINT NOT NULL,
    value  DOUBLE PRECISION NOT NULL,
    ts     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX metrics_series ON metrics (run_id, name, step);

CREATE TABLE models (
    id          UUID PRIMARY KEY,
    team_id     UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        TEXT NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE model_versions (
    id             UUID PRIMARY KEY,
    model_id       UUID NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    version        INTEGER NOT NULL CHECK (version > 0),
    job_id         UUID REFERENCES jobs (id) ON DELETE SET NULL,
    bundle_key     TEXT NOT NULL,
    bundle_sha256  TEXT NOT NULL,
    dataset_sha256 TEXT,
    spec           JSONB NOT NULL DEFAULT '{}'::jsonb,
    metrics        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_by     UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (model_id, version)
);

CREATE TABLE model_aliases (
    model_id   UUID NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias      TEXT NOT NULL CHECK (alias ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    version_id UUID NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    updated_by UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias)
);

CREATE TABLE deployments (
    id         UUID PRIMARY KEY,
    team_id    UUID NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    model_id   UUID NOT NULL REFERENCES models (id) ON DELETE RESTRICT,
    -- Exactly one of alias (follow it) or a pinned version.
    alias      TEXT,
    version_id UUID REFERENCES model_versions (id) ON DELETE RESTRICT,
    batching   JSONB NOT NULL DEFAULT '{}'::jsonb,
    traffic    JSONB NOT NULL DEFAULT '[]'::jsonb,
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleted')),
    created_by UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (team_id, name),
    CHECK ((alias IS NULL) <> (version_id IS NULL))
);

CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    ts             TIMESTAMPTZ NOT NULL DEFAULT now(),
    team_id        UUID REFERENCES teams (id) ON DELETE SET NULL,
    actor_token_id UUID REFERENCES api_tokens (id) ON DELETE SET NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    details        JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_team ON audit_log (team_id, id DESC);

-- Wake idle workers: every time a job becomes queued (submitted, retried, released,
-- rescued), notify the `kiln_jobs` channel. Identical notifications in one transaction are
-- folded into one by PostgreSQL, so a batch enqueue sends one wake-up. Workers also poll, so
-- a lost notification delays a claim by at most one poll interval.
CREATE FUNCTION kiln_notify_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify_queued
    AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION kiln_notify_job_queued();
