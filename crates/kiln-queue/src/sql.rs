//! The statements a claim and a completion run, shared by [`crate::Queue`] and the
//! benchmark, which feeds exactly these statements to `pgbench` as its baseline.

use std::sync::LazyLock;

/// The columns of `jobs` in the order [`crate::Job`] reads them.
pub const JOB_COLUMNS: &str = "jobs.id, jobs.team_id, jobs.kind, jobs.spec, jobs.inputs, jobs.priority, jobs.state, \
    jobs.device, jobs.run_after, jobs.attempt, jobs.max_attempts, jobs.lease_epoch, \
    jobs.lease_owner, jobs.lease_expires_at, jobs.heartbeat_at, jobs.cancel_requested_at, \
    jobs.checkpoint_key, jobs.checkpoint_epoch, jobs.resumed_from_epoch, jobs.progress, \
    jobs.error, jobs.result, jobs.ran_on_device, jobs.idempotency_key, jobs.trace_context, \
    jobs.created_by, jobs.created_at, jobs.updated_at, jobs.started_at, jobs.finished_at";

/// The fence every worker write carries: this job, this epoch, still running.
pub const FENCE: &str = "id = $1 AND lease_epoch = $2 AND state = 'running'";

/// Step 1 of a claim: the team whose head-of-line job goes next (priority, then fewest
/// running jobs, then age), skipping teams at their cap. `$1` accepted devices, `$2` teams
/// to skip.
pub const CHOOSE_TEAM: &str = "SELECT t.id FROM teams t \
                 CROSS JOIN LATERAL ( \
                     SELECT j.priority, j.created_at FROM jobs j \
                     WHERE j.team_id = t.id AND j.state = 'queued' AND j.run_after <= now() \
                       AND j.device = ANY($1) \
                     ORDER BY j.priority DESC, j.created_at, j.id LIMIT 1) head \
                 CROSS JOIN LATERAL ( \
                     SELECT count(*) AS n FROM jobs r \
                     WHERE r.team_id = t.id AND r.state = 'running') running \
                 WHERE running.n < t.max_running_jobs AND NOT (t.id = ANY($2)) \
                 ORDER BY head.priority DESC, running.n, head.created_at \
                 LIMIT 1";

/// Step 2: lock the team's row so claims within a team are serialised. `$1` team.
pub const LOCK_TEAM: &str = "SELECT max_running_jobs FROM teams WHERE id = $1 FOR NO KEY UPDATE";

/// Step 3: how many jobs of the team run now. `$1` team.
pub const COUNT_RUNNING: &str =
    "SELECT count(*) FROM jobs WHERE team_id = $1 AND state = 'running'";

/// Step 4: take the team's best claimable job and record the attempt. `$1` team, `$2`
/// accepted devices, `$3` worker, `$4` lease seconds.
pub static CLAIM_IN_TEAM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH next AS ( \
         SELECT id FROM jobs \
         WHERE team_id = $1 AND state = 'queued' AND run_after <= now() \
           AND device = ANY($2) \
         ORDER BY priority DESC, created_at, id LIMIT 1 \
         FOR UPDATE SKIP LOCKED), \
     claimed AS ( \
         UPDATE jobs SET state = 'running', attempt = attempt + 1, \
             lease_epoch = lease_epoch + 1, lease_owner = $3, \
             lease_expires_at = now() + make_interval(secs => $4), heartbeat_at = now(), \
             started_at = coalesce(started_at, now()), updated_at = now() \
         FROM next WHERE jobs.id = next.id \
         RETURNING {JOB_COLUMNS}), \
     attempt AS ( \
         INSERT INTO job_attempts (job_id, lease_epoch, attempt, worker_id) \
         SELECT id, lease_epoch, attempt, lease_owner FROM claimed) \
     SELECT * FROM claimed"
    )
});

/// Completion, fenced by the lease. `$1` job, `$2` epoch, `$3` result, `$4` device.
pub static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH done AS ( \
         UPDATE jobs SET state = 'succeeded', result = $3, ran_on_device = $4, \
             progress = coalesce($5, progress), error = NULL, lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = now(), updated_at = now() \
         WHERE {FENCE} RETURNING id, lease_epoch) \
     UPDATE job_attempts a SET ended_at = now(), outcome = 'succeeded' \
     FROM done WHERE a.job_id = done.id AND a.lease_epoch = done.lease_epoch \
     RETURNING a.job_id"
    )
});
