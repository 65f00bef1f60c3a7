"""The operations sections: promotion, drift monitoring, retraining, the task runner, MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from robustops import names
from robustops.config.base import DataSource, MetricName, Strict
from robustops.config.data import DataConfig
from robustops.redact import has_credentials


class MonitorConfig(Strict):
    """Drift monitoring of production batches against the champion's reference."""

    model: str | None = Field(
        None, description="the monitored model; None: models:/<registered_model>@<gate.alias>"
    )
    alpha: float = Field(
        0.01, gt=0, lt=1, description="false-alarm budget per batch (Bonferroni over columns)"
    )
    mmd_threshold: float = Field(0.015, gt=0, description="embedding drift: MMD above this is drift")
    embeddings: bool = Field(True, description="test the projected embeddings too")
    chunk: int = Field(4096, ge=1, description="images scored at once: memory stays bounded on big batches")
    min_batch: int = Field(
        20, ge=3, description="a batch needs this many usable images for the drift tests (they fail below 3)"
    )
    emit_event: bool = Field(True, description="emit robustops.drift.detected to Prefect on drift")
    estimator: Literal["atc_msp", "atc_ne", "atc_logit_z", "doc", "temperature", "scorecard_match"] = Field(
        "atc_logit_z", description="the expected-accuracy estimate that alerts and that predict prints"
    )
    min_expected_acc: float | None = Field(
        None,
        ge=0,
        le=1,
        description="alert (a drift event) when the expected accuracy is below this, beyond the "
        "batch's sampling error",
    )
    max_expected_drop: float | None = Field(
        0.04,
        ge=0,
        le=1,
        description="alert (a drift event) when the expected accuracy is more than this below the "
        "validation accuracy, and below it beyond the batch's sampling error (None: off)",
    )
    estimate_boot: int = Field(
        200, ge=0, description="bootstrap resamples of a batch for the estimate's interval"
    )
    estimate_images: int = Field(
        2000, ge=10, description="validation images the estimators are fitted on, clean and corrupted"
    )
    cron: str | None = Field(None, description="serve: monitor batch_path on this schedule")
    batch_path: Path | None = Field(None, description="serve: the batch the scheduled monitor scores")

    @field_validator("model")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None:
            names.model_uri(v)
        return v


class RetrainConfig(Strict):
    """Retraining: on a schedule, and when the monitor detects drift."""

    cron: str | None = Field(
        "0 3 * * 0", description="serve: retrain on this schedule (default Sundays 03:00)"
    )
    timezone: str = "UTC"
    on_drift: bool = Field(True, description="serve: a drift event triggers a retrain")
    labels: Literal["batch", "store"] = Field(
        "batch", description="the drifted batch's labels come with it (batch) or from label_store (store)"
    )
    label_store: Path | None = Field(
        None, description="labels='store': labelled images (npz or folder) to add"
    )


class GateConfig(Strict):
    """Promotion: the best model that passes the gate becomes the challenger; it takes the alias
    only if it beats the current champion on ``primary`` and regresses no gated metric by more
    than ``tolerance``."""

    enabled: bool = True
    alias: Annotated[str, AfterValidator(names.alias)] = Field(
        "champion", min_length=1, description="the registry alias the gate moves"
    )
    primary: MetricName = Field(
        "adv/autoattack/eps_0.1/acc", description="the score that ranks passing models"
    )
    min: dict[MetricName, float] = Field(
        {"clean/acc": 0.95, "adv/autoattack/eps_0.1/acc": 0.7},
        description="metric -> lowest allowed value",
    )
    max: dict[MetricName, float] = Field(
        {"corruption/mce": 1.2, "calibration/ece": 0.1}, description="metric -> highest allowed value"
    )
    require_masking: bool = Field(
        True, description="a model failing a gradient-masking check is not promoted"
    )
    spec_checks: list[str] = Field(
        ["invariance_brightness", "recall_floor", "rare_class", "edge_blank", "edge_constant", "edge_noise",
         "edge_saturated"],
        description="specification checks that block promotion (the others are reported only)",
    )  # fmt: skip
    tolerance: float = Field(0.01, ge=0, description="allowed regression of a gated metric vs the champion")
    significance: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="paired test: when both models' per-image outcomes on primary are known for the same "
        "test images, the challenger must beat the champion with a one-sided exact McNemar p below this",
    )
    margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="otherwise (no per-image outcomes, or another test set): the challenger must beat the "
        "champion's primary by more than this (0.02: about one standard error of an accuracy on 400 images)",
    )


class RunnerConfig(Strict):
    """Where the pipeline's training and scoring tasks run: the flow submits every model's
    training and every part of every scorecard at once, and the runner executes them."""

    kind: Literal["threads", "dask"] = Field(
        "threads", description="threads: in this process; dask: on a Dask cluster (prefect-dask)"
    )
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="threads: scoring tasks at once beside the one training lane (models train one "
        "at a time: training seeds torch's global generator); dask without an address: LocalCluster "
        "worker processes. auto: from the CPUs this process may use and the image size",
    )
    torch_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="torch threads per task (and per Dask worker). auto: 1 for images under 3x32x32 "
        "values, else the usable CPUs shared among the tasks running at once",
    )
    address: str | None = Field(
        None, description="dask: a running scheduler, e.g. tcp://dask-scheduler:8786 (None: a LocalCluster)"
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> RunnerConfig:
        if self.address and self.kind != "dask":
            raise ValueError("runner.address is a Dask scheduler: set runner.kind: dask as well")
        return self


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        # The config is logged (MLflow params, resolved.yaml, Prefect parameters): no secrets in it.
        if v is not None and has_credentials(v):
            raise ValueError(
                "holds a password; keep credentials out of configs (they are logged): set "
                "MLFLOW_TRACKING_URI in the environment, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD for a tracking server"
            )
        return v

    experiment: Annotated[str, AfterValidator(names.experiment)] = Field("robustops", min_length=1)
    registered_model: Annotated[str, AfterValidator(names.registered_model_name)] | None = Field(
        None,
        description="None: named after the data, robustops-<data> (see MlflowConfig.model_name), so data "
        "of another shape or classes never lands under the same name by default",
    )

    artifact_root: str = Field("mlartifacts", description="artifact folder of new experiments")
    register_model: bool = Field(True, description="register the model in the MLflow registry")

    def model_name(self, data: DataConfig) -> str:
        """The registered model's name: ``registered_model`` when set, else one derived from the
        data: ``robustops-digits`` for the embedded digits, ``robustops-<file stem>`` for an
        .npz file, ``robustops-<folder name>`` for an image folder. The one place that resolves
        it: a :class:`Config` fills ``registered_model`` with it when it is validated, so every
        reader (the pipeline, monitor, predict, serve, deployments) sees the same name."""
        if self.registered_model is not None:
            return self.registered_model
        if data.source is DataSource.DIGITS or data.path is None:
            stem = data.source.value
        else:
            path = Path(data.path).expanduser()
            # "data/" and "." name their folder; an .npz names its file without the suffix.
            stem = (path if path.name not in ("", ".", "..") else path.absolute()).name
            stem = stem.removesuffix(".npz") if data.source is DataSource.NPZ else stem
        # Only characters every MLflow store, models:/ URI and search filter takes.
        kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "-" for c in stem)
        stem = "-".join(filter(None, kept.split("-"))).strip(".")[: names.MAX_MODEL_NAME - 10]
        return names.registered_model_name(f"robustops-{stem or data.source.value}")
