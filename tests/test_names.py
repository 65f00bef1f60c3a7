"""The name rules (robustops/names.py) against the systems that receive the names: every name the
rules accept, MLflow's own validators and a real sqlite registry accept too, and a search filter
finds it again. So a config that loads never fails mid-run in MLflow because of a name."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import validation

from robustops import names
from robustops.catalog import load_config
from robustops.errors import ConfigError

RULES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Characters that break things: separators of URIs and filters, quotes, escapes, spaces, unicode.
TRICKY = st.text(
    alphabet=st.sampled_from(list("ab-_. /:@'\"\\`%;=+\tü日\n") + ["x"]), min_size=0, max_size=12
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    warnings.simplefilter("ignore")
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('names')}/mlflow.db")


def _accepts(rule, value) -> bool:
    try:
        rule(value)
        return True
    except ValueError:
        return False


@RULES
@given(name=TRICKY)
def test_an_accepted_model_name_works_in_the_registry_uris_and_filters(registry, name):
    if not _accepts(names.registered_model_name, name):
        return
    validation._validate_model_name(name)  # MLflow's own rule
    if not registry.search_registered_models(f"name = {names.filter_literal(name)}"):
        registry.create_registered_model(name)
    found = registry.search_registered_models(f"name = {names.filter_literal(name)}")
    assert [m.name for m in found] == [name]
    assert names.model_uri(f"models:/{name}@champion") == (name, "champion", None)
    assert names.model_uri(f"models:/{name}/3") == (name, None, "3")


@RULES
@given(alias=TRICKY)
def test_an_accepted_alias_is_one_mlflow_takes_and_does_not_reserve(alias):
    if not _accepts(names.alias, alias):
        return
    validation._validate_model_alias_name(alias)
    validation._validate_model_alias_name_reserved(alias)


@pytest.mark.parametrize(
    ("alias", "why"),
    [("a b", "letters, digits"), ("v1", "reserved"), ("V12", "reserved"), ("latest", "reserved"),
     ("Latest", "reserved"), ("", "at least 1 character"), ("x\n", "letters, digits")],
)  # fmt: skip
def test_aliases_mlflow_would_refuse_or_misread_are_refused_at_load(alias, why):
    with pytest.raises(ConfigError, match=why):
        load_config(None, [f"gate.alias={json.dumps(alias)}"])


@pytest.mark.parametrize("name", ["a/b", "a:b", "m@prod", "both'\"", " lead", "..x", ".", "tab\there"])
def test_model_names_that_would_break_uris_or_mlflow_are_refused_at_load(name):
    with pytest.raises(ConfigError, match="mlflow.registered_model"):
        load_config(None, [f"mlflow.registered_model={json.dumps(name)}"])


@RULES
@given(value=st.text(min_size=0, max_size=10))
def test_filter_literals_find_exactly_the_value(registry, value):
    try:
        literal = names.filter_literal(value)
    except ValueError:
        assert "'" in value and '"' in value
        return
    try:
        validation._validate_model_name(value)
    except MlflowException:
        return
    if not value.strip():
        return
    if not registry.search_registered_models(f"name = {literal}"):
        registry.create_registered_model(value)
    assert [m.name for m in registry.search_registered_models(f"name = {literal}")] == [value]


@RULES
@given(name=st.text(min_size=1, max_size=60).map(lambda s: s.replace("/", "")))
def test_class_segments_make_valid_metric_keys(name):
    (seg,) = names.class_segments([name])
    key = f"data/class_{seg}/n_synthetic"
    validation._validate_metric_name(key)
    assert len(key) <= names.MAX_KEY


def test_class_names_that_share_a_key_or_are_too_long_are_refused():
    with pytest.raises(ValueError, match="'a b' and 'a_b' would write the same MLflow metric keys"):
        names.class_segments(["a b", "a_b"])
    with pytest.raises(ValueError, match="is 230 characters"):
        names.class_segments(["x" * 230])


@RULES
@given(key=TRICKY)
def test_an_accepted_metric_name_is_one_mlflow_takes(key):
    if _accepts(names.metric_name, key):
        validation._validate_metric_name(key)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("evaluation.eps=[0.1, 0.1000001]", "share the metric key segment '0.1'"),
        ("evaluation.l2_eps=[1, 1.0000001]", "share the metric key segment '1'"),
        ("evaluation.noise.gaussian=[0.2, 0.20000001]", "share the metric key segment '0.2'"),
        ("evaluation.autoattack.eps=[1.5]", "must lie in [0, 1]"),
        ("adversarial_set.eps=1.5", "at most 1 for an L-inf attack"),
        ("evaluation.l2_eps=[.nan]", "finite number"),
        ("gate.min={clean/acc: .nan}", "finite number"),
        ("evaluation.noise.gaussian=[-0.1]", "(0, 1]"),
        ("evaluation.noise.salt_pepper=[7]", "(0, 1]"),
        ("gate.min={'clean acc!': 0.5}", "is not a metric name"),
        ("monitor.model=models:/a/b/1", "not usable"),
        ("defences=[{name: pgd_at, label: ' x'}]", "not usable"),
    ],
)
def test_values_that_would_fail_mid_run_are_refused_at_load(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_adversarial_set_l2_radius_may_exceed_one():
    assert (
        load_config(None, ["adversarial_set.attack=pgd_l2", "adversarial_set.eps=2.0"]).adversarial_set.eps
        == 2.0
    )
