"""FastAPI service that serves the registry's production digit classifier."""
