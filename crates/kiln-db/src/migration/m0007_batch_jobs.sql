-- Batch prediction and evaluation jobs (issues 19 and 21): job kinds, their specs and results.
-- Placeholder: filled by the work that owns it.
SELECT 1;
