-- MLflow tracking (experiments, run tags, lifecycle, params as MLflow sees them): filled by the mlflow-tracking work.
SELECT 1;
