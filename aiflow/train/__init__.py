"""Training plane: one entrypoint (``python -m aiflow.train``) that runs unchanged as a local
subprocess or in a Kubernetes pod, launched through Dagster Pipes."""
