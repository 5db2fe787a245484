"""deploy/cloudrun: the Knative service names only settings the API reads, and its size matches
the micro-batcher (workers, threads, batch size) it configures."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from serving.settings import ServingSettings
from tests.conftest import PROJECT_ROOT, api_env_names

CLOUDRUN = PROJECT_ROOT / "deploy" / "cloudrun"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@pytest.fixture(scope="module")
def service() -> dict:
    return yaml.safe_load((CLOUDRUN / "service.yaml").read_text())


@pytest.fixture(scope="module")
def container(service: dict) -> dict:
    (container,) = service["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_is_a_knative_service(service: dict) -> None:
    assert service["apiVersion"] == "serving.knative.dev/v1" and service["kind"] == "Service"


def test_every_variable_is_one_the_api_reads(container: dict) -> None:
    names = set(env_of(container))
    unknown = {n for n in names if not n.startswith("MLFLOW_")} - api_env_names()
    assert not unknown, f"the API reads no {sorted(unknown)}"
    assert "PORT" not in names, "Cloud Run sets PORT itself and rejects it in env"
    assert {"MLFLOW_TRACKING_URI", "MNIST_MODEL_NAME", "MNIST_MODEL_ALIAS"} <= names


def test_size_matches_the_micro_batcher(service: dict, container: dict) -> None:
    settings = ServingSettings(**env_of(container))
    limits = container["resources"]["limits"]
    cpus = int(limits["cpu"])
    assert settings.workers * settings.inference_threads == cpus, "one thread per vCPU"
    concurrency = service["spec"]["template"]["spec"]["containerConcurrency"]
    # Spread over the workers, the requests in flight fit in one batch each.
    assert concurrency <= settings.workers * settings.batch_max_size
    assert concurrency >= settings.workers, "every worker gets work"
    memory_mib = int(limits["memory"].removesuffix("Gi")) * 1024
    assert memory_mib >= settings.workers * 300, "300 MiB per worker (216 measured after load)"


def test_probes_and_scaling(service: dict, container: dict) -> None:
    (port,) = container["ports"]
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": port["containerPort"]}
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/health",
        "port": port["containerPort"],
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] <= 240  # Cloud Run's limit
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    low = int(annotations["autoscaling.knative.dev/minScale"])
    high = int(annotations["autoscaling.knative.dev/maxScale"])
    assert 0 <= low <= high


def test_deploy_script_fills_every_placeholder() -> None:
    script = CLOUDRUN / "deploy.sh"
    text = script.read_text()
    placeholders = set(PLACEHOLDER.findall((CLOUDRUN / "service.yaml").read_text()))
    assert placeholders == {"IMAGE", "MLFLOW_TRACKING_URI"}
    for name in placeholders:
        assert f"s|\\${{{name}}}|${{{name}}}|" in text, name
    assert "gcloud run services replace" in text and "gcloud builds submit" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
