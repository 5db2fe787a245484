# The API image: serves models:/mnist-cnn@production from the MLflow server named by
# MLFLOW_TRACKING_URI. It installs `.[serve]` only: ONNX Runtime and MLflow's client, no torch.
# Build: docker build -t mnist-api .
# Run:   docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=http://mlflow:5000 mnist-api
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mnist_core ./mnist_core
COPY serving ./serving
RUN pip install "./[serve]" && useradd --create-home --uid 10001 app

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/health\", timeout=4)"]
CMD ["python", "-m", "serving"]
