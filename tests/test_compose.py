"""docker-compose.yml checked without Docker: against the Compose Specification's JSON schema,
then its wiring (who talks to whom, what is published, what waits for what).

The schema is the compose-spec project's `compose-spec.json` as vendored and kept up to date by
check-jsonschema (its `check-compose-spec` pre-commit hook uses the same file)."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, api_env_names

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
MLFLOW_DOCKERFILE = PROJECT_ROOT / "deploy" / "mlflow.Dockerfile"
# `${NAME}`, `${NAME:-default}`, `${NAME:?error}`; `$$` is a literal dollar for the container.
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def compose_text() -> str:
    return COMPOSE.read_text().replace("$$", "\0")  # escaped dollars are no variables


def interpolated(env: dict[str, str]) -> dict:
    """The compose file as `docker compose config` would read it with this `.env`."""
    text = VARIABLE.sub(lambda match: env[match.group(1)], compose_text())
    return yaml.safe_load(text.replace("\0", "$"))


@pytest.fixture(scope="module")
def stack() -> dict:
    return interpolated(env_example())


def options(command: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (flags map to "")."""
    pairs = (arg.removeprefix("--").partition("=") for arg in command if arg.startswith("--"))
    return {name: value for name, _, value in pairs}


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port or range, container port) for each published port."""
    return [tuple(entry.rsplit(":", 2)) for entry in service.get("ports", [])]


def test_every_variable_is_documented_in_env_example_and_env_is_ignored() -> None:
    used = set(VARIABLE.findall(compose_text()))
    assert used == set(env_example()), "docker-compose.yml and .env.example disagree"
    assert "/.env" in (PROJECT_ROOT / ".gitignore").read_text().split()


def test_compose_file_follows_the_compose_spec(stack: dict) -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert not list(validator.iter_errors(stack)), [e.message for e in validator.iter_errors(stack)]
    broken = copy.deepcopy(stack)
    broken["services"]["api"]["depends_on"]["mlflow"]["condition"] = "service_up"
    assert list(validator.iter_errors(broken)), "the schema must catch a misspelt condition"


def test_mlflow_keeps_runs_in_postgresql_and_proxies_artifacts_in_s3(stack: dict) -> None:
    services = stack["services"]
    mlflow = options(services["mlflow"]["command"])
    store = urlsplit(mlflow["backend-store-uri"])
    env = env_example()
    assert store.scheme.startswith("postgresql") and store.hostname == "postgres"
    assert store.path == f"/{services['postgres']['environment']['POSTGRES_DB']}"
    assert (store.username, store.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert "serve-artifacts" in mlflow
    assert mlflow["artifacts-destination"] == f"s3://{env['MLFLOW_BUCKET']}/"
    assert "$MLFLOW_BUCKET" in services["create-bucket"]["entrypoint"][-1].replace("{", "")
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The driver that `postgresql+psycopg://` names is in the server's image.
    driver = store.scheme.partition("+")[2] or "psycopg2"
    assert re.search(rf"pip install .*\b{driver}\b", MLFLOW_DOCKERFILE.read_text())
    assert "boto3" in MLFLOW_DOCKERFILE.read_text()


def test_api_replicas_serve_from_the_tracking_server(stack: dict) -> None:
    services = stack["services"]
    api, mlflow = services["api"], options(services["mlflow"]["command"])
    assert (PROJECT_ROOT / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    tracking = urlsplit(api["environment"]["MLFLOW_TRACKING_URI"])
    assert (tracking.scheme, tracking.hostname) == ("http", "mlflow")
    assert str(tracking.port) == mlflow["port"]
    allowed = mlflow["allowed-hosts"].split(",")
    assert any(fnmatch.fnmatch(tracking.netloc, host) for host in allowed), "MLflow rejects it"
    assert set(api["environment"]) <= api_env_names() | {"MLFLOW_TRACKING_URI"}
    assert not any(name.startswith("AWS_") for name in api["environment"])  # artifacts proxied
    replicas = api["deploy"]["replicas"]
    assert replicas == 2
    (_, host_ports, container_port), = published(api)  # fmt: skip
    first, _, last = host_ports.partition("-")
    assert int(last) - int(first) + 1 == replicas, "one host port per replica"
    assert container_port == api["environment"]["PORT"]


def test_api_logs_predictions_to_a_database_and_login_of_its_own(stack: dict) -> None:
    services, env = stack["services"], env_example()
    api = services["api"]
    store = urlsplit(api["environment"]["MNIST_STORE_URL"])
    assert (store.scheme, store.hostname) == ("postgresql+psycopg", "postgres")
    assert store.path == f"/{env['PREDICTIONS_DB']}" != f"/{env['POSTGRES_DB']}"
    assert (store.username, store.password) == (
        env["PREDICTIONS_USER"],
        env["PREDICTIONS_PASSWORD"],
    )
    assert env["PREDICTIONS_USER"] != env["POSTGRES_USER"]
    assert env["POSTGRES_PASSWORD"] not in yaml.safe_dump(api), "the API gets MLflow's login"
    rule = api["depends_on"]["create-predictions-db"]
    assert rule["condition"] == "service_completed_successfully"
    job = services["create-predictions-db"]
    assert job["environment"]["PGHOST"] == "postgres"
    assert {"CREATE ROLE", "CREATE DATABASE", "NOT EXISTS"} <= set(
        re.findall(r"CREATE \w+|NOT EXISTS", job["entrypoint"][-1])
    )


def test_only_loopback_ports_and_no_database_or_storage_port_is_published(stack: dict) -> None:
    services = stack["services"]
    for name in ("postgres", "minio", "create-bucket", "create-predictions-db"):
        assert "ports" not in services[name], f"{name} must stay inside the compose network"
    for name, service in services.items():
        for address, _, _ in published(service):
            assert address == "127.0.0.1", f"{name} is published beyond this machine"


def test_startup_waits_for_healthy_dependencies(stack: dict) -> None:
    services = stack["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
            else:
                assert rule["condition"] == "service_completed_successfully", (name, dependency)
                assert services[dependency]["restart"] == "no", dependency
    long_running = [name for name, service in services.items() if service.get("restart") != "no"]
    assert all("healthcheck" in services[name] for name in long_running)


def test_prometheus_scrapes_every_api_replica(stack: dict) -> None:
    prometheus = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["api"] and discovery["type"] == "A"
    assert str(discovery["port"]) == stack["services"]["api"]["environment"]["PORT"]
    app_source = (PROJECT_ROOT / "serving" / "app.py").read_text()
    assert f'@app.get("{job["metrics_path"]}"' in app_source


def test_mlflow_server_image_lints_and_matches_the_client() -> None:
    from importlib.metadata import version

    text = MLFLOW_DOCKERFILE.read_text()
    (server_version,) = re.findall(r"^ARG MLFLOW_VERSION=(\S+)$", text, flags=re.MULTILINE)
    assert server_version.split(".")[0] == version("mlflow").split(".")[0]
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(MLFLOW_DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def mounts(service: dict) -> dict[str, Path]:
    """Container path → the repository file or directory mounted there (named volumes left out)."""
    binds = (volume.split(":") for volume in service.get("volumes", []))
    return {target: PROJECT_ROOT / source for source, target, *_ in binds if source.startswith(".")}


def test_prometheus_loads_the_alert_rules_it_is_given(stack: dict) -> None:
    prometheus = stack["services"]["prometheus"]
    mounted = mounts(prometheus)
    config_path = "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(mounted[config_path].read_text())
    assert config["rule_files"], "no alert rules"
    for rule_file in config["rule_files"]:  # relative to the config file, in the container
        in_container = str(Path(config_path).parent / rule_file)
        assert mounted[in_container].is_file(), f"{rule_file} is not mounted"
        assert mounted[in_container].parent == mounted[config_path].parent  # promtool sees both


def test_grafana_is_provisioned_from_the_repository(stack: dict) -> None:
    services = stack["services"]
    grafana = services["grafana"]
    mounted = mounts(grafana)
    provisioning = mounted["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(source["url"])
    (_, _, prometheus_port), = published(services["prometheus"])  # fmt: skip
    assert (url.hostname, str(url.port)) == ("prometheus", prometheus_port)
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "mnist.yml").read_text())[
        "providers"
    ]
    dashboards = mounted[provider["options"]["path"]]
    assert sorted(dashboards.glob("*.json")), "the provider's directory holds no dashboard"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "GF_SECURITY_ADMIN_PASSWORD" in grafana["environment"]
