-- Web UI (issue 17), if it keeps anything in PostgreSQL.
-- Placeholder: filled by the work that owns it.
SELECT 1;
