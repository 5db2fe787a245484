# The API image: `.[serve]` only (ONNX Runtime, FastAPI, MLflow's client; no torch). It serves
# models:/mnist-cnn@production from the MLflow server named by MLFLOW_TRACKING_URI, or, built as
# the `baked` target, a model copied into the image, with no registry at all. It also carries the
# two operators' commands: `mnist-feedback` (the review of feedback in MNIST_STORE_URL) and
# `mnist-registry` (the aliases of the registry at MLFLOW_TRACKING_URI).
#   docker build -t mnist-api .
#   docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=http://mlflow:5000 mnist-api
#   docker build --target baked -t mnist-api:baked .   # serves models/model.onnx
# Any base with Python 3.11+ will do (CI builds on a Debian one: deploy/container.py).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The dependencies first, the locked versions with their hashes (`make lock` writes them), so
# that editing the code reuses this layer and a build next year installs the same files.
# pip's settings for a private index or a TLS-intercepting proxy come as secrets, which stay out
# of the image: --secret id=pip.conf,src=FILE (and the CA bundle it names: id=ca.pem,src=FILE).
COPY requirements/serve.txt requirements/build.txt ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.pem \
    python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --requirement serve.txt --requirement build.txt
COPY pyproject.toml README.md ./
COPY mnist_core ./mnist_core
COPY monitoring ./monitoring
COPY serving ./serving
# The registry's command line (`mnist-registry list|promote|rollback|history|compare`) and the
# modules it imports, nothing else of the pipeline: MLflow's client and `monitoring` (compare
# reads the prediction log) are all it needs, no torch.
COPY pipeline/__init__.py ./pipeline/
COPY pipeline/registry/__init__.py pipeline/registry/commands.py pipeline/registry/aliases.py \
     pipeline/registry/demotion.py pipeline/registry/history.py ./pipeline/registry/
# The package alone, then what only building needed (pip itself included) leaves the venv.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip uninstall --yes setuptools pip

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    MNIST_STORE_URL=sqlite:////home/app/predictions.db
RUN useradd --uid 10001 --user-group --create-home app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# `python -m serving` listens on $HOST:$PORT (Cloud Run sets PORT). The prediction log defaults
# to a SQLite file in the user's home (lost with the container: set MNIST_STORE_URL to keep it).
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/ready\", timeout=4)"]
CMD ["python", "-m", "serving"]

# The registry-free image: MODEL (an ONNX file, or an MLflow model directory such as
# `mlflow artifacts download -u models:/mnist-cnn@production -d models/production` writes)
# is served for good, and the registry is never contacted.
FROM runtime AS baked
ARG MODEL=models/model.onnx
COPY ${MODEL} /app/model
ENV MNIST_MODEL_PATH=/app/model

# The default target: the image that follows the registry.
FROM runtime
