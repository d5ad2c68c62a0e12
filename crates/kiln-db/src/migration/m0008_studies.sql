-- Hyperparameter studies (issue 18): studies, trials, the pruned job state.
-- Placeholder: filled by the work that owns it.
SELECT 1;
