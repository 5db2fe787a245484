"""Where runs and models live (tracking server, registry names): one pydantic-settings object,
read from the environment by the pipeline and the API alike."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedded default: a SQLite tracking/registry store and local artifacts in the project root.
LOCAL_TRACKING_URI = "sqlite:///mlflow.db"
LOCAL_ARTIFACT_ROOT = "mlartifacts"
SQLITE_PREFIX = "sqlite:///"


class MlflowSettings(BaseSettings):
    """Where runs and models live. `MLFLOW_TRACKING_URI` is the variable MLflow itself reads."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    tracking_uri: str = Field(default=LOCAL_TRACKING_URI, validation_alias="MLFLOW_TRACKING_URI")
    experiment_name: str = Field(default="mnist-cnn", validation_alias="MNIST_EXPERIMENT_NAME")
    model_name: str = Field(default="mnist-cnn", validation_alias="MNIST_MODEL_NAME")
    model_alias: str = Field(default="production", validation_alias="MNIST_MODEL_ALIAS")
    # Where the alias pointed before the last promotion, so that a rollback knows where to go.
    previous_alias: str = Field(default="previous", validation_alias="MNIST_PREVIOUS_ALIAS")
    # The version that the API also scores, in the shadow of the serving alias, and that
    # `mnist-registry compare` compares with it (the register stage gives it to a version that
    # passes the gate but may not be promoted on its own).
    challenger_alias: str = Field(default="challenger", validation_alias="MNIST_CHALLENGER_ALIAS")
    local_artifact_root: str = Field(
        default=LOCAL_ARTIFACT_ROOT, validation_alias="MNIST_ARTIFACT_ROOT"
    )

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.model_alias}"

    def missing_local_store(self) -> str | None:
        """A sentence when the tracking URI names a SQLite file that does not exist, else None.

        The default `sqlite:///mlflow.db` is relative: started elsewhere than the project root,
        MLflow would quietly create an empty store there, and nothing would be served."""
        if not self.tracking_uri.startswith(SQLITE_PREFIX):
            return None
        path = Path(self.tracking_uri.removeprefix(SQLITE_PREFIX).partition("?")[0])
        if path.is_file():
            return None
        return (
            f"MLFLOW_TRACKING_URI={self.tracking_uri} names {path.absolute()}, which does not "
            "exist: start from the project root (where `dvc repro` writes mlflow.db), or set "
            "MLFLOW_TRACKING_URI to the store's absolute path (sqlite:////path/to/mlflow.db)."
        )
