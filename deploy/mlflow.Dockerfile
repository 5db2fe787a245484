# The tracking server of docker-compose.yml: the official MLflow image (the same MLflow release as
# the pipeline's client) plus the two drivers it does not ship: psycopg for the PostgreSQL backend
# store (`postgresql+psycopg://`) and boto3 for the S3 (MinIO) artifact store. Installed at build
# time rather than by a `pip install` entrypoint, so that a restart needs no package index and
# always runs the same code.
ARG MLFLOW_VERSION=3.17.2
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION}

RUN pip install --no-cache-dir "psycopg[binary]==3.3.9" "boto3==1.44.5"

EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
