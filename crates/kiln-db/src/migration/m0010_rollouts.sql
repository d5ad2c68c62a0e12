-- Progressive rollouts of deployments (issue 21).
-- Placeholder: filled by the work that owns it.
SELECT 1;
