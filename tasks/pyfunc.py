"""The loader that guarded models registered before robustops 0.2 name in their ``MLmodel``
(``loader_module: tasks.pyfunc``): MLflow imports it by that name, so it stays here."""

from adapters.pyfunc import load_pyfunc as _load_pyfunc

__all__ = ["_load_pyfunc"]
