"""The MLflow side of the pipeline: runs and their datasets (`tracking`), where a model came from
(`lineage`), the promotion policy (`policy`), registering a version (`publish`), the aliases
(`aliases`) and their command line (`commands`, `mnist-registry`), and the MLproject writer."""
