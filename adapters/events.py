"""The Prefect events robustops emits and its deployments wait for."""

# Emitted by the monitor when a batch drifted; the retrain deployment's trigger expects it.
DRIFT_EVENT = "robustops.drift.detected"
