"""The MLflow model registry: versions, aliases and their lock, the champion reference, the logged model,
its lineage and decision record, and the champion's lifecycle."""
