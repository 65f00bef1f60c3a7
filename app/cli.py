"""The ``robustops`` command line.

Bad input (config, data, arguments) ends with one readable ``error:`` line and exit code 2, and is
caught before Prefect or MLflow start, so nothing is written for a run that could not succeed.
SIGTERM (``docker stop``, an eviction) and Ctrl-C stop the work under way within a batch: the
runs are marked KILLED, the run's unpromoted model versions deleted, and the command ends with one
``error:`` line and exit code 143 (SIGTERM) or 130 (Ctrl-C). A command that runs flows starts a
watchdog (:mod:`app.watchdog`), so that even a SIGKILL leaves no temporary server behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from typing import Any

from robustops.redact import redact

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # the shell's convention for a process ended by a signal
EXIT_TERMINATED = 128 + signal.SIGTERM
FLOW_COMMANDS = {"run", "evaluate", "monitor", "serve"}


def _quiet_telemetry() -> None:
    # Set before mlflow/prefect are imported: both read these at import time.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robustops")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="robustops",
        description="Train, attack and score image classifiers; keep the champion robust in production.",
        epilog="Each command has its own help and an example: robustops COMMAND --help",
    )
    p.add_argument("--version", action="version", version=f"robustops {_version()}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help: str, example: str) -> argparse.ArgumentParser:
        s = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        s.add_argument("--config", "-c", default=None, help="YAML config (default: built-in defaults)")
        s.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set train.epochs=5 (repeatable)",
        )
        return s

    def takes_a_batch(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--convert",
            action="store_true",
            help="convert images of other channels or size to the model's input "
            "(default: refuse them, as the served model does)",
        )

    with_config(
        "run",
        "run the robustness pipeline (Prefect flow, results in MLflow)",
        "robustops run --config configs/default.yaml --set train.epochs=5",
    )
    with_config("config", "print the resolved config and exit", "robustops config --set defences=[pgd_at]")
    with_config(
        "check-data",
        "load and validate the configured data, print class counts",
        "robustops check-data --set data.source=folder --set data.path=my_images",
    )
    ev = with_config(
        "evaluate",
        "score any model on a labelled dataset, as it is, with no training: a registered model or "
        "your own (its own flow, results in MLflow)",
        "robustops evaluate --model models:/robustops-digits@champion --data new_writers.npz\n"
        "  robustops evaluate --model resnet.pt2 --data test.npz --set model.preprocess.mean=[0.49,0.48,0.45] "
        "--set model.preprocess.std=[0.25,0.24,0.26]\n"
        "  robustops evaluate --model resnet.pt2 --data test.npz --register",
    )
    ev.add_argument(
        "--model",
        default=None,
        help="a model robustops registered (models:/NAME@ALIAS, models:/NAME/VERSION) or any model "
        "source: package.module:callable, path/to/file.py:callable, a .pt2 or TorchScript file, an "
        "MLflow PyTorch model (models:/..., runs:/RUN_ID/PATH); default: model.source of the config",
    )
    ev.add_argument(
        "--data", required=True, help="an .npz file or an image folder, labelled with the model's classes"
    )
    ev.add_argument(
        "--register",
        action="store_true",
        help="also register your model (its outputs must be the data's classes) and put it to the gate, "
        "so it can become the champion that predict, monitor and retraining use",
    )
    takes_a_batch(ev)
    pr = with_config(
        "predict",
        "score a production batch with a registered guarded model; write predictions and features",
        "robustops predict --data batch.npz --out predictions",
    )
    pr.add_argument("--model", default=None, help="models:/NAME@ALIAS or /VERSION (default: the champion)")
    pr.add_argument("--data", required=True, help="an .npz (x, optional y) or an image folder")
    pr.add_argument("--out", default="predictions", help="folder for predictions.csv and features.csv")
    takes_a_batch(pr)
    mo = with_config(
        "monitor",
        "score a batch and test it for drift (its own flow; emits a Prefect event on drift)",
        "robustops monitor --data batch.npz",
    )
    mo.add_argument("--model", default=None, help="models:/NAME@ALIAS or /VERSION (default: the champion)")
    mo.add_argument("--data", required=True, help="an .npz (x, optional y) or an image folder")
    takes_a_batch(mo)
    with_config(
        "serve",
        "register and serve the pipeline, monitor and retrain deployments on a Prefect server",
        "PREFECT_API_URL=http://127.0.0.1:4200/api robustops serve",
    )
    sm = with_config(
        "serve-model",
        "serve a registered guarded model over HTTP (MLflow's scoring server behind request limits)",
        "robustops serve-model --port 5001",
    )
    sm.add_argument("--model", default=None, help="models:/NAME@ALIAS or /VERSION (default: the champion)")
    sm.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    sm.add_argument("--port", type=int, default=5001, help="port (default: 5001)")
    dp = with_config(
        "deploy",
        "register the pipeline, monitor and retrain deployments to a work pool (a worker runs them)",
        "robustops deploy --pool robustops",
    )
    dp.add_argument(
        "--pool",
        default="robustops",
        help="work pool; a missing one is created as a process pool (default: robustops)",
    )
    dp.add_argument(
        "--image", default=None, help="for a docker or kubernetes pool: the robustops image its jobs run"
    )
    return p


def _print_counts(split: Any) -> None:
    parts = [split.train, split.val, split.test]
    total = sum(len(p.y) for p in parts)
    print(
        f"{split.train.source}: {total} images, shape {split.train.shape}, {split.train.num_classes} classes"
    )
    print(f"  split: {split.sizes()}")
    for name in split.train.classes:
        print(f"  {name}: {sum(p.counts()[name] for p in parts)}")


def _run(cfg: Any) -> int:
    from adapters.tracking import end_of_run_hints, tracking_uri
    from flows.pipeline import robustness_pipeline
    from robustops.evaluation.gate import model_lines
    from robustops.evaluation.report import text_table

    start = time.perf_counter()
    out = robustness_pipeline(cfg)
    took = time.perf_counter() - start
    print(f"\nrobustops: pipeline finished in {took:.1f} s  (split {out['sizes']})")
    print(text_table({name: m["metrics"] for name, m in out["models"].items()}, short=True))
    print("(every metric: the MLflow runs, and report/scorecard.html on the parent run)")
    versions = [f"{name} v{m['version']}" for name, m in out["models"].items() if m["version"]]
    if versions:
        print(f"registered: {out['registered_model']}: {', '.join(versions)}")
    if out.get("gate"):
        print(f"gate:       {out['gate']['summary']}")
        scores = {name: m["metrics"] for name, m in out["models"].items()}
        for line in model_lines(out["gate"], scores, cfg.gate.primary):
            print(line)
    print(f"MLflow:     {redact(tracking_uri(cfg.mlflow))}  parent run {out['parent_run_id']}")
    print("\n".join(end_of_run_hints(cfg, out["parent_run_id"], out["flow_run_id"])))
    return 0


def _evaluate(cfg: Any, uri: str | None, data: str, convert: bool, register: bool) -> int:
    from app.checks import evaluate_inputs
    from flows.evaluate import robustness_evaluation

    # bad model URI or data: one line, before any server starts
    evaluate_inputs(cfg, uri, data, convert, register)
    from adapters.tracking import end_of_run_hints, tracking_uri
    from robustops.evaluation.gate import model_lines
    from robustops.evaluation.report import text_table

    out = robustness_evaluation(uri, data, cfg, convert, register)
    version = f" (version {out['model']['version']})" if out["model"].get("version") else ""
    name = out["model"]["model"]
    print(f"\nrobustops: {out['model']['uri']}{version} on {data}: {out['n']} images scored")
    print(text_table({name: out["metrics"]}, short=True))
    if out.get("version"):
        print(f"registered: {cfg.mlflow.registered_model}: {name} v{out['version']}")
    if out.get("gate"):
        print(f"gate:       {out['gate']['summary']}")
        for line in model_lines(out["gate"], {name: out["metrics"]}, cfg.gate.primary):
            print(line)
    print(f"MLflow:     {redact(tracking_uri(cfg.mlflow))}  run {out['run_id']}")
    print("\n".join(end_of_run_hints(cfg, out["run_id"])))
    return 0


def _predict(cfg: Any, uri: str, data: str, out: str, convert: bool) -> int:
    from pathlib import Path

    from app.checks import champion_and_batch
    from robustops.cpus import torch_threads, use_threads
    from robustops.monitoring.monitor import batch_scores, expect, score
    from robustops.spreadsheet import write_csv

    guarded, ref, champion, x, y = champion_and_batch(cfg, uri, data, convert)
    with use_threads(torch_threads(x[0].size)):
        scored = score(guarded, ref, x, cfg.monitor.chunk)
    predictions, features = scored.predictions, scored.features
    expectation = expect(ref, scored, cfg.monitor, y, cfg.seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(predictions, folder / "predictions.csv")  # class names are users' text: no formulas
    write_csv(features, folder / "features.csv")
    n = len(predictions)
    print(f"robustops: {uri} (version {champion['version']}) scored {n} images from {data}")
    # Abstentions are no answer, not errors: coverage and the two accuracies, each named.
    for line in batch_scores(predictions, y).lines():
        print(f"  {line}")
    if expectation is not None:
        print(f"  {expectation.line()}")
        for reason in expectation.reasons:
            print(f"  ALERT: {reason}")
    print(f"  wrote {folder / 'predictions.csv'} and {folder / 'features.csv'}")
    return 0


def _monitor(cfg: Any, uri: str, data: str, convert: bool) -> int:
    from adapters.tracking import tracking_uri
    from app.checks import monitor_inputs
    from flows.monitor import robustness_monitor

    monitor_inputs(cfg, uri, data, convert)  # a bad model or batch: one line, before any server starts
    out = robustness_monitor(data, cfg, uri, convert)
    verdict = "DRIFT DETECTED: " + "; ".join(out["reasons"]) if out["drift"] else "no drift"
    print(
        f"\nrobustops: {data} ({out['n']} images) against {uri} (version {out['model']['version']}): {verdict}"
    )
    if out["expected_accuracy"]:
        print(f"  {out['expected_accuracy']}")
    if out["event"]:
        print(
            f"  emitted robustops.drift.detected (event {out['event']}): a served retrain deployment picks it up"
        )
    print(
        f"MLflow:     {redact(tracking_uri(cfg.mlflow))}  run {out['run_id']} (drift/report.html: the Evidently report)"
    )
    from adapters.tracking import end_of_run_hints

    print("\n".join(end_of_run_hints(cfg, out["run_id"])))
    return 0


def _on_sigterm(signum: int, frame: Any) -> None:
    # During a flow run Prefect swaps in its own handler, tears the run down, then sends the
    # signal again: it lands here, after the runs were marked.
    from robustops.errors import Stopped

    raise Stopped(f"stopped by {signal.Signals(signum).name}")


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    from robustops.errors import DataWarning

    if issubclass(category, DataWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _own_prefect() -> None:
    """This process's watchdog and the temporary Prefect server's own session (used only when
    PREFECT_API_URL names no server), set up once the config (and for ``run`` the data) has been
    read: a refused input is reported without importing Prefect's server, seconds sooner."""
    from adapters.prefect_server import own_temporary_server
    from app import watchdog

    watchdog.start()
    own_temporary_server()


def main(argv: list[str] | None = None) -> int:
    _quiet_telemetry()
    from robustops.redact import install_log_redaction

    install_log_redaction()  # a password in $MLFLOW_TRACKING_URI never reaches a log line
    args = _parser().parse_args(argv)
    from robustops.errors import RobustopsError, Stopped

    warnings.showwarning = _show_warning
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals are not this caller's to handle
        previous = None
    try:
        from robustops.catalog import load_config
        from robustops.config import to_yaml

        overrides = args.overrides
        if args.command == "evaluate" and args.model and not args.model.startswith("models:/"):
            # Certainly a user's model (only a models:/ URI may name one robustops registered,
            # which carries its own settings): model.weights and the rest are checked against it
            # as the config loads.
            overrides = [f"model.source={json.dumps(args.model)}", *overrides]
        cfg = load_config(args.config, overrides)
        if args.command == "config":
            print(to_yaml(cfg), end="")
            return 0
        if args.command in FLOW_COMMANDS - {"run"}:
            _own_prefect()
        if args.command == "evaluate":
            return _evaluate(cfg, args.model, args.data, args.convert, args.register)
        if args.command == "predict":
            return _predict(cfg, args.model or cfg.monitored_model, args.data, args.out, args.convert)
        if args.command == "monitor":
            return _monitor(cfg, args.model or cfg.monitored_model, args.data, args.convert)
        if args.command == "serve":
            from app.serve import serve

            serve(cfg)
            return 0
        if args.command == "deploy":
            from app.deploy import deploy

            print("\n".join(deploy(cfg, args.pool, args.image)))
            return 0
        if args.command == "serve-model":
            from adapters.pyfunc import serve_model

            serve_model(cfg, args.model or cfg.monitored_model, args.host, args.port)
            return 0
        from app.checks import run_inputs

        split = run_inputs(cfg)
        if args.command == "check-data":
            _print_counts(split)
            return 0
        del split
        _own_prefect()
        return _run(cfg)
    except Stopped as e:
        print(f"error: {e}: the runs under way were marked KILLED and their unpromoted model versions "
              "deleted; rerun to go on (finished stages come from the cache)", file=sys.stderr)  # fmt: skip
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C): the runs under way were marked KILLED; rerun to go on",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except RobustopsError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # an unexpected failure: still one line, with a way to see more
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        warnings.showwarning = _default_showwarning
        if "adapters.handoff" in sys.modules:  # loaded by a command that read data: drop what no task took
            sys.modules["adapters.handoff"].clear()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
