"""What happens after a prediction: the prediction log, user feedback and drift results (a
SQLAlchemy store), the metrics that watch them, and the review CLI. No torch, no `pipeline`: the
API and the pipeline both import it."""
