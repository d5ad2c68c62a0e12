-- (1) One metric point per (run, name, step). A job resumed from a checkpoint re-runs the
-- epochs after it and reports them again; before this migration each report added a row,
-- so a series could hold two points for one epoch. Keep the latest report of each point
-- (by its timestamp, then by physical order: the later insert), then make the key unique so
-- writers upsert (`ON CONFLICT (run_id, name, step) DO UPDATE`): a repeated write is
-- idempotent and a re-run epoch replaces its value.
DELETE FROM metrics m
USING (
    SELECT ctid, row_number() OVER (PARTITION BY run_id, name, step ORDER BY ts DESC, ctid DESC) AS n
    FROM metrics
) ranked
WHERE m.ctid = ranked.ctid AND ranked.n > 1;

DROP INDEX metrics_series;
CREATE UNIQUE INDEX metrics_point ON metrics (run_id, name, step);

-- (2) A deployment refuses instances carrying fields its model does not take (a typo in a
-- feature name would otherwise be silently ignored and the feature imputed or refused as
-- missing), unless it was created or patched to allow them.
ALTER TABLE deployments ADD COLUMN allow_extra_features BOOLEAN NOT NULL DEFAULT false;

-- (3) How long a worker's lease lasts: a worker silent for longer is lost (killed, its
-- machine gone), and `GET /v1/admin/workers` lists it as stopped at its last heartbeat.
-- Rows of workers registered before this column existed use the default lease.
ALTER TABLE workers ADD COLUMN lease_seconds DOUBLE PRECISION NOT NULL DEFAULT 60
    CHECK (lease_seconds > 0);
