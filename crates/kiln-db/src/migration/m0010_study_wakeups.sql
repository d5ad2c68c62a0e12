-- The study scheduler runs a pass as soon as one of a study's trials ends (instead of at
-- its next half-second tick), so a sequential study does not idle between trials.
CREATE FUNCTION jobs_notify_trial_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_studies', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify_trial_ended
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IS DISTINCT FROM OLD.state
          AND NEW.state IN ('succeeded', 'failed', 'cancelled', 'pruned')
          AND NEW.inputs ? 'trial')
    EXECUTE FUNCTION jobs_notify_trial_ended();
