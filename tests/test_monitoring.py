"""Drift monitoring: features, the Evidently adapter's decision, chunked scoring, batches, the
retrain config, and the deployments `robustops serve` registers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustops.catalog import load_config
from robustops.data.loaders import load_batch
from robustops.errors import ConfigError, DataValidationError
from robustops.monitoring.drift import DriftSettings, detect
from robustops.monitoring.features import IMAGE_COLUMNS, Projection, batch_features, image_stats
from robustops.monitoring.monitor import score
from robustops.monitoring.reference import build_reference, load_reference, save_reference
from robustops.serving import GuardedModel, settings_for


def test_image_stats_by_hand():
    x = np.stack([np.full((1, 8, 8), 0.5), np.zeros((1, 8, 8)), np.ones((1, 8, 8))]).astype(np.float32)
    noisy = np.clip(0.5 + 0.2 * np.random.default_rng(0).standard_normal((1, 1, 8, 8)), 0, 1).astype(
        np.float32
    )
    s = image_stats(np.concatenate([x, noisy]))
    assert list(s.columns) == IMAGE_COLUMNS
    assert s["brightness"].tolist()[:3] == pytest.approx([0.5, 0.0, 1.0])
    assert s["contrast"][:3].tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    assert s["sharpness"][0] == pytest.approx(0, abs=1e-6) and s["sharpness"][3] > 0.01
    assert s["noise"][3] > s["noise"][0] + 0.05
    assert s["dark_share"][1] == 1.0 and s["bright_share"][2] == 1.0 and s["bright_share"][0] == 0.0


def test_projection_keeps_the_main_axes():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((500, 2)) @ np.array([[3.0, 0, 0, 0], [0, 0.1, 0, 0]])
    p = Projection.fit(emb.astype(np.float32), 1)
    assert abs(abs(p.axes[0, 0]) - 1) < 1e-3 and p(emb).shape == (500, 1) and p.columns == ["emb_0"]


@pytest.fixture(scope="module")
def reference(trained, digits_split):
    return build_reference(trained.model, digits_split.val, digits_split.train.classes)


def _features(trained, x, reference):
    return batch_features(trained.model, x, trained.blueprint.classes, reference.projection)[0]


def test_clean_batches_pass_and_shifted_ones_drift(trained, digits_split, reference):
    rng = np.random.default_rng(0)
    test = digits_split.test
    settings = DriftSettings()
    clean = detect(
        reference.features,
        _features(trained, test.x[rng.choice(len(test.y), 200, replace=False)], reference),
        settings,
    )
    assert (
        not clean.drift
        and clean.reasons == []
        and set(clean.p_values) >= {"brightness", "confidence", "predicted"}
    )
    m = test.x.mean(axis=(1, 2, 3), keepdims=True)
    dim = ((test.x - m) * 0.5 + m).astype(np.float32)[:200]
    shifted = detect(reference.features, _features(trained, dim, reference), settings)
    assert shifted.drift and any(r.startswith("contrast") for r in shifted.reasons)
    three = np.flatnonzero(np.isin(test.y, [0, 1, 2]))
    prior = detect(
        reference.features, _features(trained, test.x[rng.choice(three, 200)], reference), settings
    )
    assert prior.drift and any(r.startswith("predicted") for r in prior.reasons)
    assert shifted.metrics()["drift/detected"] == 1.0 and "drift/p_value/contrast" in shifted.metrics()


def test_embedding_mmd_samples_big_batches(trained, digits_split, reference, tmp_path):
    # Evidently's MMD needs an (n + m)^2 kernel matrix: above mmd_rows it runs on a seeded sample,
    # so a 100,000-image batch costs a 2,000-row matrix, not 82 GB.
    test = digits_split.test
    feats = _features(trained, test.x, reference)
    full = detect(reference.features, feats, DriftSettings())
    small = DriftSettings(mmd_rows=100)
    a, b = detect(reference.features, feats, small), detect(reference.features, feats, small)
    assert full.embedding_snapshot is None and a.embedding_snapshot is not None
    assert a.embedding_mmd == b.embedding_mmd  # a seeded sample: the same decision every time
    assert a.p_values == full.p_values  # the column tests still use every row
    m = test.x.mean(axis=(1, 2, 3), keepdims=True)
    dim = detect(
        reference.features, _features(trained, ((test.x - m) * 0.3 + m).astype(np.float32), reference), small
    )
    assert dim.embedding_mmd > small.mmd_threshold >= a.embedding_mmd  # the sampled MMD still sees a shift
    a.save_html(tmp_path / "report.html")
    assert (tmp_path / "report.html").exists() and (tmp_path / "report_embeddings.html").exists()


def test_chunked_scoring_equals_one_pass(trained, digits_split, reference):
    guarded = GuardedModel(trained.model, settings_for(trained.blueprint, None))
    p1, f1, _ = score(guarded, reference, digits_split.test.x, chunk=10_000)
    p2, f2, _ = score(guarded, reference, digits_split.test.x, chunk=37)
    assert p1.equals(p2)
    np.testing.assert_allclose(
        f1.drop(columns="predicted").to_numpy(), f2.drop(columns="predicted").to_numpy(), atol=1e-5
    )
    x = digits_split.test.x[:10].copy()
    x[3, 0, 0, 0] = np.nan
    p, f, _ = score(guarded, reference, x)
    assert p["rejected"].sum() == 1 and len(f) == 9  # a rejected image is no evidence of drift


def test_reference_round_trip(reference, tmp_path):
    save_reference(reference, tmp_path)
    back = load_reference(tmp_path)
    np.testing.assert_allclose(back.projection.axes, reference.projection.axes)
    assert back.features["predicted"].dtype == object and len(back.features) == len(reference.features)
    with pytest.raises(DataValidationError, match="no drift reference"):
        load_reference(tmp_path / "nowhere")


def test_batches_in_every_format(tmp_path, digits):
    shape, classes = (1, 8, 8), digits.classes
    np.savez(tmp_path / "unlabelled.npz", x=(digits.x[:5, 0] * 255).astype(np.uint8))
    x, y = load_batch(tmp_path / "unlabelled.npz", shape, classes)
    assert x.shape == (5, 1, 8, 8) and y is None
    np.savez(tmp_path / "labelled.npz", x=digits.x[:5], y=digits.y[:5])
    assert load_batch(tmp_path / "labelled.npz", shape, classes)[1].tolist() == digits.y[:5].tolist()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray((digits.x[i, 0] * 255).astype(np.uint8)).resize((16, 16)).save(flat / f"{i}.png")
    # Another size is refused, as the served model refuses it, unless conversion is asked for
    # (issue 15, item 5).
    with pytest.raises(
        DataValidationError, match="holds greyscale 16x16 images; the model takes 1x8x8.*--convert"
    ):
        load_batch(flat, shape, classes)
    x, y = load_batch(flat, shape, classes, convert=True)
    assert x.shape == (3, 1, 8, 8) and y is None
    rgb = np.repeat(digits.x[:4], 3, axis=1)
    np.savez(tmp_path / "rgb.npz", x=rgb)
    with pytest.raises(DataValidationError, match="holds RGB 8x8 images; the model takes 1x8x8"):
        load_batch(tmp_path / "rgb.npz", shape, classes)
    assert load_batch(tmp_path / "rgb.npz", shape, classes, convert=True)[0].shape == (4, 1, 8, 8)
    np.savez(tmp_path / "alien.npz", x=digits.x[:5], y=digits.y[:5] + 50)
    with pytest.raises(DataValidationError, match="label\\(s\\) .* the model does not know"):
        load_batch(tmp_path / "alien.npz", shape, classes)
    (flat / "notes.txt").write_text("x")
    with pytest.raises(DataValidationError, match="notes.txt: is not a PNG/JPEG image"):
        load_batch(flat, shape, classes, convert=True)


def test_retrain_adds_the_drifted_batch_to_training(tmp_path):
    from robustops.config import with_batch

    cfg = load_config(None, [])
    assert with_batch(cfg, None) == cfg
    assert [str(p) for p in with_batch(cfg, "/data/b1.npz").data.extra_train] == ["/data/b1.npz"]
    store = load_config(None, ["retrain.labels=store", f"retrain.label_store={tmp_path}/labels.npz"])
    assert with_batch(store, "/data/b1.npz").data.extra_train == [tmp_path / "labels.npz"]
    with pytest.raises(ConfigError, match="retrain.label_store is not set"):
        with_batch(load_config(None, ["retrain.labels=store"]), "/data/b1.npz")


def test_extra_training_data_joins_the_training_split_only(tmp_path, digits):
    from tasks.data import load_data

    np.savez(tmp_path / "extra.npz", x=digits.x[:30], y=digits.y[:30])
    base = load_data.fn(load_config(None, []).data, 0)
    more = load_data.fn(load_config(None, [f"data.extra_train=[{tmp_path}/extra.npz]"]).data, 0)
    assert len(more.train.y) == len(base.train.y) + 30
    assert len(more.val.y) == len(base.val.y) and len(more.test.y) == len(base.test.y)
    np.savez(tmp_path / "nolabels.npz", x=digits.x[:30])
    with pytest.raises(DataValidationError, match="has no labels"):
        load_data.fn(load_config(None, [f"data.extra_train=[{tmp_path}/nolabels.npz]"]).data, 0)


def test_serve_registers_three_deployments_with_schedule_and_trigger():
    from adapters.events import DRIFT_EVENT
    from app.serve import deployments

    cfg = load_config(
        None,
        ["retrain.cron=0 4 * * *", "monitor.cron='*/15 * * * *'", "monitor.batch_path=/data/incoming.npz"],
    )
    deps = {d.name: d for d in deployments(cfg)}
    assert set(deps) == {"pipeline", "monitor", "retrain"}
    retrain = deps["retrain"]
    assert [s.schedule.cron for s in retrain.schedules] == ["0 4 * * *"]
    (trigger,) = retrain.triggers
    assert trigger.expect == {DRIFT_EVENT} and trigger.parameters == {"batch": "{{ event.payload.batch }}"}
    assert retrain.concurrency_limit == 1 or getattr(retrain.concurrency_limit, "limit", None) == 1
    assert deps["monitor"].parameters["batch"] == "/data/incoming.npz"
    assert [s.schedule.cron for s in deps["monitor"].schedules] == ["*/15 * * * *"]
    assert deps["pipeline"].parameters["cfg"]["seed"] == cfg.seed
    no_drift = {
        d.name: d for d in deployments(load_config(None, ["retrain.on_drift=false", "retrain.cron=null"]))
    }
    assert no_drift["retrain"].triggers == [] and no_drift["retrain"].schedules == []


def test_serve_without_a_prefect_server_is_a_clear_error(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from adapters.prefect_server import PrefectUnavailable, check_server

    with (
        temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        pytest.raises(PrefectUnavailable, match="no Prefect server answers at http://127.0.0.1:9/api"),
    ):
        check_server()


def test_a_reference_of_more_than_a_thousand_rows_still_tests_with_p_values():
    """Evidently switches to distances above 1,000 reference rows unless told the test: the
    decision must stay a p-value one (it once never fired on MNIST's 5,000-image reference)."""
    from robustops.monitoring.drift import DriftSettings, detect
    from robustops.monitoring.features import CLASS_COLUMN

    rng = np.random.default_rng(0)

    def table(n: int, shift: float) -> pd.DataFrame:
        df = pd.DataFrame(rng.normal(shift, 1.0, (n, len(IMAGE_COLUMNS))), columns=IMAGE_COLUMNS)
        df[CLASS_COLUMN] = rng.choice(["a", "b", "c"], n)
        return df

    ref = table(3000, 0.0)
    settings = DriftSettings(0.01, 0.015, False)
    assert not detect(ref, table(300, 0.0), settings).drift
    moved = detect(ref, table(300, 0.5), settings)
    assert moved.drift and all(0 <= p <= 1 for p in moved.p_values.values())
    assert min(moved.p_values.values()) < 1e-6


def test_a_class_the_reference_never_predicted_is_weak_evidence_and_a_prior_shift_is_strong():
    """The predicted-class test compares two samples: one prediction of a class the reference
    never predicted must not drift a batch (a goodness-of-fit test expects zero there and gives
    p = 0), while a batch that predicts that class often must, and the p-value equals scipy's
    test of homogeneity on the two count rows."""
    from scipy.stats import chi2_contingency

    from robustops.monitoring.features import CLASS_COLUMN

    ref_counts, cur_counts = [60, 60, 60, 0], [40, 40, 39, 1]

    def table(counts: list[int]) -> pd.DataFrame:
        labels = np.repeat(["a", "b", "c", "d"], counts)
        return pd.DataFrame({"confidence": np.linspace(0.2, 0.9, len(labels)), CLASS_COLUMN: labels})

    settings = DriftSettings(0.01, 0.015, False)
    one = detect(table(ref_counts), table(cur_counts), settings)
    assert not one.drift
    expected = chi2_contingency(np.array([ref_counts, cur_counts])).pvalue
    assert one.p_values[CLASS_COLUMN] == pytest.approx(expected)
    many = detect(table(ref_counts), table([30, 30, 30, 30]), settings)
    assert many.drift and many.p_values[CLASS_COLUMN] < 1e-6
