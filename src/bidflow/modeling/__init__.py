"""Training, evaluation (incl. bid-filter economics), the bias gate and the MLflow registry adapter."""
