"""A user's own model scored as it is: every source kind, the output contract, and bad inputs.

Each source is a small ResNet-like network the tests build and train themselves, on RGB images
they make; its audited clean accuracy must equal a direct forward pass under the declared
preprocessing, on the same scored images.
"""

from __future__ import annotations

import inspect

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from app.cli import main
from robustops.catalog import load_config
from robustops.config import ModelConfig
from robustops.data import Dataset, load_split
from robustops.data.split import split_for_thresholds
from robustops.errors import ModelSourceError, ModelWarning
from robustops.sources import kind_of, prepare, resolve_factory
from robustops.sources.programs import load_exported, load_torchscript
from tests.helpers.runs import TINY_CONFIG, set_args
from tests.helpers.user_model import SmallResNet

MEAN, STD = [0.4, 0.45, 0.5], [0.25, 0.2, 0.3]
PREPROCESS = [f"model.preprocess.mean={MEAN}", f"model.preprocess.std={STD}"]
# The tiny config with the scorecard cut to its plumbing: each audit takes seconds.
FAST = [
    "evaluation.autoattack.enabled=false",
    "evaluation.eps=[0.1]",
    "evaluation.l2_eps=[]",
    "evaluation.corruptions=[fog]",
    "evaluation.severities=[2]",
    "evaluation.max_samples=32",
    "evaluation.noise={gaussian: [0.1], uniform: [0.1], salt_pepper: [0.1]}",
]
# The user's file: the network of tests/helpers/user_model.py, as the source of a module of its own.
NET = "import torch\nfrom torch import nn\n\n\n" + inspect.getsource(SmallResNet)


def _images(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB 12x12 images of 4 classes: class c < 3 has a bright channel c, class 3 is dim."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n // 4)
    x = rng.uniform(0, 0.5, (n, 3, 12, 12)).astype(np.float32)
    for c in range(3):
        x[y == c, c] += rng.uniform(0, 0.2, (int((y == c).sum()), 12, 12)).astype(np.float32)
    return np.clip(x, 0, 1), y


def _standardized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folder: the file defining their class, their data, their trained network and
    its weights as a checkpoint dict saved from DataParallel, a .pt2 export with a fixed batch
    size, and TorchScript."""
    root = tmp_path_factory.mktemp("user")
    (root / "net.py").write_text(NET)
    x, y = _images()
    np.savez(root / "data.npz", x=x, y=y)
    torch.manual_seed(0)
    net = resolve_factory(f"{root / 'net.py'}:SmallResNet")()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xs, ys = _standardized(torch.from_numpy(x)), torch.from_numpy(y)
    for _ in range(25):  # accurate, not perfect: a wrong preprocessing shows in the accuracy
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    net.eval()
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": sd}, root / "ckpt.pth")
    torch.export.save(torch.export.export(net, (xs[:5],)), root / "net.pt2")
    torch.jit.save(torch.jit.script(net), root / "net.ts")
    return {"root": root, "net": net, "x": x, "y": y}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"mlflow.artifact_root={root}/mlartifacts"]


def _direct_accuracy(user, seed: int) -> tuple[float, int]:
    """The network's accuracy on the images an audit scores, by a plain forward pass."""
    split = split_for_thresholds(Dataset(user["x"], user["y"], ["0", "1", "2", "3"], "data"), seed)
    with torch.no_grad():
        pred = user["net"](_standardized(torch.from_numpy(split.test.x))).argmax(1).numpy()
    return float((pred == split.test.y).mean()), len(split.test.y)


def _runs(store) -> list:
    uri = store[0].split("=", 1)[1]
    c = MlflowClient(uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    return c.search_runs(
        exps, "tags.`robustops.kind` = 'evaluation'", order_by=["attributes.start_time DESC"]
    )


def _users_experiment(uri: str) -> str:
    """The user's own experiment, without making it MLflow's active one for the whole process."""
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("users-own-models")
    return exp.experiment_id if exp else c.create_experiment("users-own-models")


def _log_pytorch_model(user, store) -> str:
    """The user's network logged by the user (pickled with the file defining it) to MLflow."""
    import sys

    uri = store[0].split("=", 1)[1]
    mlflow.set_tracking_uri(uri)
    sys.path.insert(0, str(user["root"]))
    try:
        from net import SmallResNet  # the class importable by name, as in a user's project

        net = SmallResNet()
        net.load_state_dict(user["net"].state_dict())
        with mlflow.start_run(experiment_id=_users_experiment(uri)):
            mlflow.pytorch.log_model(
                net.eval(),
                name="net",
                registered_model_name="users-resnet",
                serialization_format="pickle",
                code_paths=[str(user["root"] / "net.py")],
            )
    finally:
        sys.path.remove(str(user["root"]))
        sys.modules.pop("net", None)  # loaded back through the code logged with the model
    return "models:/users-resnet/1"


@pytest.mark.parametrize("kind", ["factory", "exported", "torchscript", "mlflow"])
def test_every_source_audits_to_its_direct_accuracy(kind, user, store, prefect_harness):
    # No capsys in a test that runs flows: Prefect's log handlers keep the stream they first
    # wrote to, and capsys closes its stream when the test ends.
    root = user["root"]
    sets = [*store, *PREPROCESS, *FAST]
    if kind == "factory":
        model = f"{root / 'net.py'}:SmallResNet"
        sets += [f"model.weights={root / 'ckpt.pth'}"]
    elif kind == "exported":
        model = str(root / "net.pt2")  # exported for batches of 5: scored in chunks
    elif kind == "torchscript":
        model = str(root / "net.ts")
    else:
        model = _log_pytorch_model(user, store)
    args = ["evaluate", "--model", model, "--data", str(root / "data.npz"), "--config", str(TINY_CONFIG)]
    assert main([*args, *set_args(sets)]) == 0
    run = _runs(store)[0]
    expected, n = _direct_accuracy(user, load_config(TINY_CONFIG, store).seed)
    assert 0.4 < expected < 1  # a network that is neither chance nor perfect
    assert run.data.metrics["clean/acc"] == pytest.approx(expected, abs=1e-9)
    assert run.data.metrics["clean/n"] == n
    tags, params = run.data.tags, run.data.params
    assert (
        tags["source.kind"] == kind
        and tags["source.outputs"] == "logits"
        and tags["source.random"] == "false"
    )
    assert params["source.preprocess"].startswith('{"scale": 1.0, "mean": [0.4, 0.45, 0.5]')
    # The UI's Description and Source say what was scored, from where, under which preprocessing.
    note = tags["mlflow.note.content"]
    assert f"Source: {kind} " in note and '"mean": [0.4, 0.45, 0.5]' in note and "4 logits" in note
    assert tags["mlflow.source.name"] == "robustops: Prefect flow robustness-evaluation"
    if kind == "factory":
        assert len(params["source.weights_sha256"]) == 64 and len(params["source.factory_sha256"]) == 64
    if kind in ("exported", "torchscript"):
        assert len(params["source.program_sha256"]) == 64
    assert "adv/pgd_linf/eps_0.1/acc" in run.data.metrics


def test_a_wrong_preprocessing_is_scored_as_declared_and_warned_about(user, store, prefect_harness):
    """The declared preprocessing is what gets scored (never guessed); a declaration that leaves
    the data far from standardized is named."""
    root = user["root"]
    sets = [*store, *FAST, "model.preprocess.scale=255", *PREPROCESS]
    args = [
        "evaluate",
        "--model",
        str(root / "net.ts"),
        "--data",
        str(root / "data.npz"),
        "-c",
        str(TINY_CONFIG),
    ]
    with pytest.warns(ModelWarning, match=r"far from standardized .*model\.preprocess\.scale"):
        assert main([*args, *set_args(sets)]) == 0
    assert _runs(store)[0].data.tags["source.outputs"] == "logits"
    right, _ = _direct_accuracy(user, load_config(TINY_CONFIG, store).seed)
    assert _runs(store)[0].data.metrics["clean/acc"] < right - 0.2


BAD_SOURCES = [
    ("nosuchpackage.models:resnet", [], "no module named 'nosuchpackage'"),
    ("{root}/net.py:SmallResNt", [], "has no attribute 'SmallResNt'; did you mean SmallResNet?"),
    ("{root}/net.py:SmallResNet", ["model.kwargs={{depth: 3}}"], "raised TypeError: "),
    (
        "{root}/net.py:SmallResNet",
        ["model.weights={root}/truncated.pth"],
        "not a readable torch weights file",
    ),
    ("{root}/net.py:SmallResNet", ["model.weights={root}/pickled.pth"], "holds Python objects"),
    (
        "{root}/net.py:SmallResNet",
        ["model.kwargs={{width: 16}}", "model.weights={root}/ckpt.pth"],
        "wrong shape: ",
    ),
    (
        "{root}/net.py:SmallResNet",
        ["model.kwargs={{classes: 3}}"],
        "the model gives 3 outputs but the data has 4",
    ),
    (
        "{root}/net.py:SmallResNet",
        ["model.classes=[a, b, c, d]"],
        "the data's class(es) 0, 1, 2, 3 are not among",
    ),
    ("{root}/net.ts", ["model.preprocess.mean=[0.5, 0.5]"], "mean has 2 values but the data has 3"),
    ("{root}/net.pt2", ["model.preprocess.size=[10, 10]"], "the model fails on"),
    ("{root}/ckpt.pth", [], "not a TorchScript file (a state_dict?"),
    ("{root}/net.ts.pt2", [], "a TorchScript file, not an exported program"),
    ("{root}/data.npz.pt2", [], "not an exported program"),
    ("{root}/model.onnx", [], "not a source robustops knows"),
    ("models:/nobody/1", [], "no registered model 'nobody'"),
    ("runs:/0123456789abcdef/model", [], "no run 0123456789abcdef"),
]


@pytest.mark.parametrize(("source", "extra", "message"), BAD_SOURCES, ids=[m for _, _, m in BAD_SOURCES])
def test_each_bad_source_is_one_clear_error_and_logs_nothing(source, extra, message, user, store, capsys):
    root = user["root"]
    if not (root / "truncated.pth").exists():
        (root / "truncated.pth").write_bytes((root / "ckpt.pth").read_bytes()[:300])
        torch.save(nn.Sequential(nn.Linear(2, 2)), root / "pickled.pth")  # a module, pickled whole
        (root / "net.ts.pt2").write_bytes((root / "net.ts").read_bytes())
        (root / "data.npz.pt2").write_bytes((root / "data.npz").read_bytes())
    before = len(_runs(store))
    sets = [*store, *FAST, *PREPROCESS, *(e.format(root=root) for e in extra)]
    args = ["evaluate", "--model", source.format(root=root), "--data", str(root / "data.npz")]
    assert main([*args, "-c", str(TINY_CONFIG), *set_args(sets)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert len(_runs(store)) == before


def _probe(out: nn.Module, cfg: ModelConfig | None = None, classes: list[str] | None = None):
    x, y = _images(40)
    return prepare(out, cfg or ModelConfig(source="x.pt2"), x, classes or ["0", "1", "2", "3"], y)


class _Fixed(nn.Module):
    """A network whose output is ``fn`` of a fixed linear score."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * 12 * 12, 4)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.lin(x.flatten(1)))


def test_probabilities_are_scored_as_their_logarithm_and_log_probabilities_as_logits():
    torch.manual_seed(0)
    probs = _Fixed(lambda z: z.softmax(1))
    with pytest.warns(ModelWarning, match="outputs probabilities"):
        model, report = _probe(probs)
    x = torch.from_numpy(_images(40)[0])
    assert report.outputs == "probabilities"
    with torch.no_grad():
        assert torch.allclose(model(x).softmax(1), probs(x), atol=1e-6)  # same answers, log scale
        assert torch.allclose(model(x), probs(x).log(), atol=1e-6)
    logp = _Fixed(lambda z: z.log_softmax(1))
    with pytest.warns(ModelWarning, match="log-probabilities"):
        _, report = _probe(logp)
    assert report.outputs == "log_probabilities"
    _, report = _probe(_Fixed(lambda z: z))
    assert report.outputs == "logits" and not any("probabilities" in w for w in report.warnings)


def test_a_random_eval_output_is_flagged():
    torch.manual_seed(0)
    noisy = _Fixed(lambda z: nn.functional.dropout(z, 0.5, training=True))
    with pytest.warns(ModelWarning, match="eval-mode output is random"):
        _, report = _probe(noisy)
    assert report.random and report.as_tags()["source.random"] == "true"
    _, report = _probe(_Fixed(lambda z: z))
    assert not report.random


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda z: z.unsqueeze(-1), r"output has shape \(40, 4, 1\)"),
        (lambda z: (z, z), "returns a tuple of 2 tensors"),
        (lambda z: z * float("nan"), "NaN or infinity"),
        (lambda z: z.sum(), r"output has shape \(\)"),
    ],
    ids=["3d", "tuple", "nan", "scalar"],
)
def test_an_output_that_is_not_logits_is_refused(fn, message):
    with pytest.raises(ModelSourceError, match=message):
        _probe(_Fixed(fn))


def test_a_class_map_names_the_outputs_and_more_outputs_than_classes_stay_scored():
    torch.manual_seed(0)
    cfg = ModelConfig(source="x.pt2", classes=["3", "2", "1", "0"])
    _, report = _probe(_Fixed(lambda z: z), cfg)
    assert report.classes == ["3", "2", "1", "0"]
    # Integer-labelled data and a model with more outputs: output i is class "i", all scored.
    wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 6))
    _, report = _probe(wide)
    assert report.classes == ["0", "1", "2", "3", "4", "5"]
    with pytest.raises(ModelSourceError, match="model.classes names 3 classes but the model gives 4"):
        _probe(_Fixed(lambda z: z), ModelConfig(source="x.pt2", classes=["a", "b", "c"]))


def test_an_exported_program_with_a_fixed_batch_gives_the_direct_outputs(user):
    model = load_exported(user["root"] / "net.pt2")
    x = _standardized(torch.from_numpy(user["x"][:13]))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), user["net"](x), atol=1e-5)  # 13 = 5 + 5 + 3 padded
    assert torch.equal(load_torchscript(user["root"] / "net.ts")(x), user["net"](x))


def test_the_source_kind_is_told_by_its_form():
    assert kind_of("torchvision.models:resnet18") == "factory"
    assert kind_of("models/net.py:build") == "factory"
    assert kind_of("models/net.pt2") == "exported"
    assert kind_of("models/net.ts") == kind_of("net.pt") == "torchscript"
    assert kind_of("models:/resnet@champion") == kind_of("runs:/abc/model") == "mlflow"
    with pytest.raises(ModelSourceError, match="not a source robustops knows"):
        kind_of("net.onnx")
    with pytest.raises(ValueError, match="weights apply to a factory source"):
        ModelConfig(source="net.pt2", weights="w.pt")


def test_frozen_batch_norm_stays_in_eval_mode_while_the_rest_trains(user):
    from robustops.sources import assemble

    model = assemble(load_torchscript(user["root"] / "net.ts"), ModelConfig(source="net.ts"), 3)
    model.frozen_norm = True
    model.train()
    norms = [m for m in model.modules() if "BatchNorm" in getattr(m, "original_name", type(m).__name__)]
    assert norms and not any(m.training for m in norms) and model.network.stem.training
    model.frozen_norm = False
    assert all(m.training for m in model.train().modules())


def _hardening_run(user, store, tmp_path, extra: list[str]) -> list[str]:
    root = user["root"]
    return [
        *store,
        *PREPROCESS,
        *FAST,
        "data.source=npz",
        f"data.path={root / 'data.npz'}",
        "data.train_class_fraction={}",
        "adversarial_set={enabled: false}",
        "defences=[{name: pgd_at, steps: 2, select_steps: 2}]",
        "evaluation.specification.checks=[]",
        "gate={primary: adv/pgd_linf/eps_0.1/acc, min: {}, max: {}, require_masking: false, spec_checks: []}",
        f"model.source={root / 'net.py'}:SmallResNet",
        f"model.weights={root / 'ckpt.pth'}",
        "finetune={epochs: 2, lr: 0.01, freeze: [stem]}",
        "mlflow.registered_model=users-resnet-hardened",
        *extra,
    ]


def test_hardening_fine_tunes_the_users_model_and_serves_without_their_code(
    user, store, prefect_harness, tmp_path
):
    import hashlib
    import subprocess
    import sys

    from flows.pipeline import robustness_pipeline

    cfg = load_config(TINY_CONFIG, _hardening_run(user, store, tmp_path, []))
    out = robustness_pipeline(cfg)
    c = MlflowClient(store[0].split("=", 1)[1])
    base, hard = out["models"]["baseline"], out["models"]["pgd_at"]
    # The baseline is the user's model as it is: no training, its direct accuracy.
    assert (
        base["metrics"]["train/seconds"] < 5 and c.get_run(base["run_id"]).data.metrics["val/best_acc"] > 0.4
    )
    test = load_split(cfg.data, cfg.seed, cfg.limits).test
    with torch.no_grad():
        direct = (user["net"](_standardized(torch.from_numpy(test.x))).argmax(1).numpy() == test.y).mean()
    assert base["metrics"]["clean/acc"] == pytest.approx(direct, abs=1e-9)
    versions = {
        n: c.get_model_version("users-resnet-hardened", m["version"]) for n, m in out["models"].items()
    }
    weights_sha = hashlib.sha256((user["root"] / "ckpt.pth").read_bytes()).hexdigest()
    for name, mv in versions.items():
        assert mv.tags["lineage.source"] == f"factory: {user['root'] / 'net.py'}:SmallResNet"
        assert f"weights {weights_sha}" in mv.tags["lineage.sha256"]
        assert '"mean": [0.4, 0.45, 0.5]' in mv.tags["lineage.preprocess"]
        assert f'"name": "{"standard" if name == "baseline" else name}"' in mv.tags["lineage.defence"]
        assert '"epochs": 2' in mv.tags["lineage.finetune"]
    assert '"steps": 2' in versions["pgd_at"].tags["lineage.defence"]
    # Fine-tuned from the user's weights: the frozen stem is the user's, the rest moved.
    from adapters.registered import load_checkpoint

    tuned, blueprint, _ = load_checkpoint(cfg.mlflow, f"models:/users-resnet-hardened/{hard['version']}")
    assert blueprint.source is not None and blueprint.source["outputs"] == "logits"
    own = user["net"].state_dict()
    net = tuned.network
    got = (net.program if hasattr(net, "program") else net).state_dict()  # a saved program
    assert torch.equal(got["stem.weight"], own["stem.weight"])
    assert not torch.equal(got["head.weight"], own["head.weight"])
    # The registered guarded model loads and answers where the user's code is not.
    away = tmp_path / "elsewhere"
    away.mkdir()
    x = user["x"][:6]
    np.save(away / "x.npy", x)
    script = (
        "import mlflow, numpy as np, sys\n"
        f"mlflow.set_tracking_uri({store[0].split('=', 1)[1]!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/users-resnet-hardened/{hard['version']}')\n"
        "print(list(m.predict(np.load('x.npy'))['confidence']))\n"
        "assert not any('net' in k and 'robustops_user' in k for k in sys.modules)\n"
    )
    moved = user["root"] / "net.py.away"
    (user["root"] / "net.py").rename(moved)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=away, capture_output=True, text=True, timeout=300
        )
    finally:
        moved.rename(user["root"] / "net.py")
    assert done.returncode == 0, done.stderr[-2000:]
    served = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - a list of floats we printed
    with torch.no_grad():
        direct = tuned(torch.from_numpy(x)).softmax(1).max(1).values.tolist()
    assert served == pytest.approx(direct, abs=1e-5)  # the same network answers, every image


def test_an_exported_program_cannot_be_hardened_and_nothing_is_registered(user, store, tmp_path, capsys):
    c = MlflowClient(store[0].split("=", 1)[1])
    before = (len(_runs(store)), len(c.search_model_versions()))
    sets = _hardening_run(
        user, store, tmp_path, [f"model.source={user['root'] / 'net.pt2'}", "model.weights=null"]
    )
    assert main(["run", "--config", str(TINY_CONFIG), *set_args(sets)]) == 2
    err = capsys.readouterr().err
    assert "cannot be fine-tuned" in err and len(err.strip().splitlines()) == 1
    freeze = _hardening_run(user, store, tmp_path, ["finetune.freeze=[ste]"])
    assert main(["run", "--config", str(TINY_CONFIG), *set_args(freeze)]) == 2
    err = capsys.readouterr().err
    assert "finetune.freeze: no parameter of the model is named ste or under it" in err, err
    assert (len(_runs(store)), len(c.search_model_versions())) == before


def test_an_mlflow_model_without_the_pytorch_flavour_is_refused_by_name(user, store, capsys):
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            return model_input

    mlflow.set_tracking_uri(store[0].split("=", 1)[1])
    with mlflow.start_run(experiment_id=_users_experiment(store[0].split("=", 1)[1])) as run:
        mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    before = len(_runs(store))
    capsys.readouterr()  # MLflow's own notes while logging
    args = ["evaluate", "--model", f"runs:/{run.info.run_id}/echo", "--data", str(user["root"] / "data.npz")]
    assert main([*args, "-c", str(TINY_CONFIG), *set_args([*store, *PREPROCESS])]) == 2
    err = capsys.readouterr().err
    assert "an MLflow model without the pytorch flavour" in err and len(err.strip().splitlines()) == 1
    assert len(_runs(store)) == before


def test_mixed_precision_and_channels_last_train_and_fp16_needs_a_gpu(user):
    from robustops.config import TrainConfig
    from robustops.errors import ConfigError
    from robustops.training import fit

    x, y = _images(96, seed=1)
    data = Dataset(x, y, ["0", "1", "2", "3"], "x")
    trained = {}
    for name, settings in {
        "fp32": {},
        "bf16": {"mixed_precision": "bf16"},
        "cl": {"channels_last": True},
    }.items():
        torch.manual_seed(0)
        model = resolve_factory(f"{user['root'] / 'net.py'}:SmallResNet")()
        before = [p.detach().clone() for p in model.parameters()]
        result = fit(model, data, data, TrainConfig(epochs=2, batch_size=32, progress=False, **settings))
        assert np.isfinite(result.history[-1]["loss"])
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        trained[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.equal(trained["bf16"], trained["fp32"])  # autocast did run in bf16
    assert torch.allclose(trained["cl"], trained["fp32"], atol=1e-3)  # the same training, another layout
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(model, data, data, TrainConfig(epochs=1, progress=False, mixed_precision="fp16"))


def test_freezing_matches_whole_name_segments_and_leaves_something_to_train(user):
    from robustops.config import FinetuneConfig
    from robustops.errors import ConfigError
    from robustops.sources import assemble, tunable_copy

    model = assemble(user["net"], ModelConfig(source="net.py:SmallResNet"), 3)
    tuned = tunable_copy(model, FinetuneConfig(freeze=["stem", "block.0"]))
    frozen = {n for n, p in tuned.network.named_parameters() if not p.requires_grad}
    assert frozen == {"stem.weight", "stem.bias", "block.0.weight", "block.0.bias"}
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched
    with pytest.raises(ConfigError, match="no parameter of the model is named bloc or under it"):
        tunable_copy(model, FinetuneConfig(freeze=["bloc"]))
    with pytest.raises(ConfigError, match="freezes every parameter"):
        tunable_copy(model, FinetuneConfig(freeze=["stem", "bn", "block", "head"]))


# A gate an audited tiny model can pass, with mCE in it: a registered audit is its own baseline.
AUDIT_GATE = (
    "gate={primary: adv/pgd_linf/eps_0.1/acc, min: {clean/acc: 0.3}, max: {corruption/mce: 1.2}, "
    "require_masking: false, spec_checks: []}"
)


def _audit(user, store, registry: str, extra: tuple[str, ...] = ()) -> list[str]:
    root = user["root"]
    sets = [*store, *PREPROCESS, *FAST, "evaluation.specification.checks=[]", AUDIT_GATE,
            f"model.weights={root / 'ckpt.pth'}", f"mlflow.registered_model={registry}", *extra]  # fmt: skip
    model = f"{root / 'net.py'}:SmallResNet"
    return ["evaluate", "--model", model, "--data", str(root / "data.npz"), "--register",
            "-c", str(TINY_CONFIG), *set_args(sets)]  # fmt: skip


def test_an_audited_model_registers_becomes_the_champion_and_the_loop_uses_it(
    user, store, prefect_harness, tmp_path
):
    import hashlib

    root, uri = user["root"], store[0].split("=", 1)[1]
    c = MlflowClient(uri)
    assert main(_audit(user, store, "users-resnet-audited")) == 0
    exps = [e.experiment_id for e in c.search_experiments()]
    run = c.search_runs(exps, "tags.`robustops.kind` = 'audit'", order_by=["attributes.start_time DESC"])[0]
    mv = c.get_model_version_by_alias("users-resnet-audited", "champion")
    assert mv.run_id == run.info.run_id and str(mv.version) == "1" and run.info.status == "FINISHED"
    weights_sha = hashlib.sha256((root / "ckpt.pth").read_bytes()).hexdigest()
    tags = mv.tags
    assert tags["lineage.source"] == f"factory: {root / 'net.py'}:SmallResNet"
    assert f"weights {weights_sha}" in tags["lineage.sha256"]
    assert '"mean": [0.4, 0.45, 0.5]' in tags["lineage.preprocess"] and tags["lineage.defence"] == "none"
    assert tags["data.source"] == f"npz: {root / 'data.npz'}" and tags["gate"] == "passed"
    expected, n = _direct_accuracy(user, load_config(TINY_CONFIG, store).seed)
    assert run.data.metrics["clean/acc"] == pytest.approx(expected, abs=1e-9)
    assert run.data.metrics["corruption/mce"] == pytest.approx(1.0)
    assert "report/scorecard.html" in {f.path for f in c.list_artifacts(run.info.run_id, "report")}
    # The version is a robustops model now: rebuilt from its checkpoint, it scores what the audit did.
    again = ["evaluate", "--model", "models:/users-resnet-audited@champion", "--data", str(root / "data.npz")]
    assert main([*again, "-c", str(TINY_CONFIG), *set_args([*store, *FAST])]) == 0
    assert _runs(store)[0].data.metrics["clean/acc"] == pytest.approx(expected, abs=1e-9)
    # predict serves it (the guarded model and the drift reference logged with it).
    out = tmp_path / "predictions"
    sets = [*store, "mlflow.registered_model=users-resnet-audited"]
    assert main(["predict", "--data", str(root / "data.npz"), "--out", str(out), "-c", str(TINY_CONFIG),
                 *set_args(sets)]) == 0  # fmt: skip
    assert len((out / "predictions.csv").read_text().strip().splitlines()) == len(user["y"]) + 1
    # The same model audited again does not beat the champion: registered, not promoted.
    assert main(_audit(user, store, "users-resnet-audited")) == 0
    assert str(c.get_model_version_by_alias("users-resnet-audited", "champion").version) == "1"
    second = c.get_model_version("users-resnet-audited", "2")
    assert not second.aliases and c.get_run(second.run_id).data.metrics["gate/promoted"] == 0
    # A version robustops registered is one already: --register is refused for it.
    from app.checks import evaluate_inputs
    from robustops.errors import ConfigError

    with pytest.raises(ConfigError, match="already a version robustops registered"):
        evaluate_inputs(load_config(TINY_CONFIG, store), "models:/users-resnet-audited/1", str(root / "data.npz"),
                        register=True)  # fmt: skip


def test_a_registration_that_fails_leaves_no_version_behind(user, store, prefect_harness, monkeypatch):
    import flows.evaluate

    def registry_went_away(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("the registry went away")

    monkeypatch.setattr(flows.evaluate, "promote", registry_went_away)  # fails after registering
    root, c = user["root"], MlflowClient(store[0].split("=", 1)[1])
    sets = [*store, *PREPROCESS, *FAST, "evaluation.specification.checks=[]", AUDIT_GATE,
            f"model.weights={root / 'ckpt.pth'}", "mlflow.registered_model=users-resnet-failing"]  # fmt: skip
    cfg = load_config(TINY_CONFIG, sets + [f"model.source={root / 'net.py'}:SmallResNet"])
    with pytest.raises(RuntimeError, match="the registry went away"):
        flows.evaluate.robustness_evaluation(None, str(root / "data.npz"), cfg, to_registry=True)
    assert c.search_model_versions("name = 'users-resnet-failing'") == []
    exps = [e.experiment_id for e in c.search_experiments()]
    last = c.search_runs(exps, "tags.`robustops.kind` = 'audit'", order_by=["attributes.start_time DESC"])[0]
    assert last.info.status == "FAILED"


def test_register_refuses_what_cannot_be_registered_before_scoring(user, store, capsys):
    from app.checks import evaluate_inputs
    from robustops.errors import ConfigError

    root = user["root"]
    c = MlflowClient(store[0].split("=", 1)[1])
    before = (len(_runs(store)), len(c.search_model_versions()))
    base = [*store, *PREPROCESS, *FAST, "evaluation.specification.checks=[]", AUDIT_GATE]
    data = str(root / "data.npz")
    # Outputs that are not the data's classes: scored as they are, but never a version of the data.
    cfg = load_config(TINY_CONFIG, [*base, f"model.source={root / 'net.py'}:SmallResNet",
                                    "model.kwargs={classes: 5}", "model.classes=['0', '1', '2', '3', other]"])  # fmt: skip
    evaluate_inputs(cfg, None, data)
    with pytest.raises(ModelSourceError, match="registering needs exactly the data's classes"):
        evaluate_inputs(cfg, None, data, register=True)
    # A gate naming a score the audit does not produce.
    gate = "gate.primary=adv/autoattack/eps_0.1/acc"
    cfg = load_config(TINY_CONFIG, [*base, gate, f"model.source={root / 'net.ts'}"])
    with pytest.raises(ConfigError, match="gate.primary: this run produces no metric"):
        evaluate_inputs(cfg, None, data, register=True)
    # On the command line: one line, exit 2, nothing logged or registered.
    args = ["evaluate", "--model", str(root / "net.ts"), "--data", data, "--register", "-c", str(TINY_CONFIG)]
    assert main([*args, *set_args([*base, gate])]) == 2
    err = capsys.readouterr().err
    assert "this run produces no metric" in err and len(err.strip().splitlines()) == 1
    assert (len(_runs(store)), len(c.search_model_versions())) == before
