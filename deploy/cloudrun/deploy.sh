#!/usr/bin/env bash
# Build the API image with Cloud Build, push it to Artifact Registry, and deploy service.yaml to
# Cloud Run, open to the public. Run from anywhere in the repository:
#
#   PROJECT=my-project REGION=europe-west1 MLFLOW_TRACKING_URI=https://mlflow.example.org \
#     deploy/cloudrun/deploy.sh
#
# Needs gcloud (logged in: `gcloud auth login`) and the Cloud Build, Artifact Registry and Cloud
# Run APIs enabled in PROJECT. MLFLOW_TRACKING_URI must be an MLflow server that Cloud Run can
# reach; the API downloads the production model through it.
set -euo pipefail
: "${PROJECT:?set PROJECT to your Google Cloud project id}"
: "${REGION:?set REGION, e.g. europe-west1}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to your MLflow server (https://...)}"
REPOSITORY=${REPOSITORY:-mnist}
SERVICE=mnist-api

cd "$(git rev-parse --show-toplevel)"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/${SERVICE}:$(git rev-parse --short HEAD)"

if ! gcloud artifacts repositories describe "$REPOSITORY" \
  --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
  gcloud artifacts repositories create "$REPOSITORY" \
    --project "$PROJECT" --location "$REGION" --repository-format docker
fi
# Cloud Build builds the repository's Dockerfile and pushes the image.
gcloud builds submit --project "$PROJECT" --tag "$IMAGE" .

rendered=$(mktemp --suffix .yaml)
trap 'rm -f "$rendered"' EXIT
sed -e "s|\${IMAGE}|${IMAGE}|" -e "s|\${MLFLOW_TRACKING_URI}|${MLFLOW_TRACKING_URI}|" \
  deploy/cloudrun/service.yaml >"$rendered"
gcloud run services replace "$rendered" --project "$PROJECT" --region "$REGION"
# A public demo: anyone may call it (drop this line to keep the service private).
gcloud run services add-iam-policy-binding "$SERVICE" --project "$PROJECT" --region "$REGION" \
  --member allUsers --role roles/run.invoker >/dev/null
gcloud run services describe "$SERVICE" --project "$PROJECT" --region "$REGION" \
  --format 'value(status.url)'
