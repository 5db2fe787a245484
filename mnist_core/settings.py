"""Where runs and models live (tracking server, registry names): one pydantic-settings object,
read from the environment by the pipeline and the API alike."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The embedded default: a SQLite tracking/registry store and local artifacts in the project root.
LOCAL_TRACKING_URI = "sqlite:///mlflow.db"
LOCAL_ARTIFACT_ROOT = "mlartifacts"


class MlflowSettings(BaseSettings):
    """Where runs and models live. `MLFLOW_TRACKING_URI` is the variable MLflow itself reads."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    tracking_uri: str = Field(default=LOCAL_TRACKING_URI, validation_alias="MLFLOW_TRACKING_URI")
    experiment_name: str = Field(default="mnist-cnn", validation_alias="MNIST_EXPERIMENT_NAME")
    model_name: str = Field(default="mnist-cnn", validation_alias="MNIST_MODEL_NAME")
    model_alias: str = Field(default="production", validation_alias="MNIST_MODEL_ALIAS")
    # Where the alias pointed before the last promotion, so that a rollback knows where to go.
    previous_alias: str = Field(default="previous", validation_alias="MNIST_PREVIOUS_ALIAS")
    local_artifact_root: str = Field(
        default=LOCAL_ARTIFACT_ROOT, validation_alias="MNIST_ARTIFACT_ROOT"
    )

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.model_alias}"
