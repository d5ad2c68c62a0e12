-- MLflow registry and artifacts (version sources, tags, descriptions, logged models): filled by the mlflow-registry work.
SELECT 1;
