"""The application: the robustops command, the Prefect deployments it serves, and its pre-flight checks."""
