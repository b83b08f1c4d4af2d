"""Properties of the router's TOML config (gateway/config.py): whatever the file holds,
loading it gives a Config or a ConfigError naming the file, never another exception (the
daemon, the portal and `check-config` all start by loading it); a config written by
`to_toml` loads back as itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.config import SECTIONS, Config, ConfigError, from_dict, load, to_toml
from tests.fuzz.jsonvalues import mutated

DEFAULT = to_toml(Config())


def load_text(tmp: Path, text: str) -> Config | None:
    path = tmp / "plaza.toml"
    path.write_text(text, encoding="utf-8")
    try:
        return load(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
        return None


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@given(st.text(max_size=400))
@example("a = " + "[" * 5000)  # regression: tomllib's RecursionError escaped
@example("a = " + "[" * 5000 + "]" * 5000)
@example("[gateway]\nstate_dir = 1")
def test_any_text_is_a_config_or_a_config_error(tmp: Path, text: str) -> None:
    load_text(tmp, text)


@given(mutated(DEFAULT))
def test_a_mutated_config_is_a_config_or_a_config_error(tmp: Path, text: str) -> None:
    load_text(tmp, text)


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["198.19.0.1/24", "br-lan", "https://cloud.test", "*.co.uk", "10m", "::1"]),
)
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@st.composite
def config_dicts(draw: st.DrawFn) -> dict:
    """Parsed TOML as a file could hold it: known sections and keys, mostly, with any values."""
    data: dict = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "offers", "nope"]), max_size=4)):
        if section == "offers":
            data[section] = draw(
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["id", "title", "body", "url", "x"]),
                        toml_values,
                        max_size=4,
                    ),
                    max_size=3,
                )
            )
            continue
        cls = SECTIONS.get(section)
        keys = list(cls.__dataclass_fields__) if cls else ["x"]
        data[section] = draw(
            st.dictionaries(st.sampled_from([*keys, "unknown"]), toml_values, max_size=4)
        )
    return data


@given(config_dicts())
@example({"garden": {"domains": ["*.example.com", "wallet.test\n"]}})
@example({"lan": {"address": "198.19.0.1/33"}})
@example({"policy": {"max_clients": 10**18}})
def test_any_parsed_toml_is_a_config_or_a_config_error(data: dict) -> None:
    try:
        config = from_dict(data)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    assert isinstance(config, Config)


@given(config_dicts())
def test_what_loads_writes_back_as_itself(tmp: Path, data: dict) -> None:
    try:
        config = from_dict(data)
    except ConfigError:
        return
    text = to_toml(config)
    assert tomllib.loads(text) is not None
    assert load_text(tmp, text) == config


def test_deep_arrays_are_a_config_error(tmp: Path) -> None:
    """Regression: tomllib recurses per nested array, so `a = [[[[...` raised RecursionError
    out of load(); every caller expects a ConfigError."""
    with pytest.raises(ConfigError, match="nested too deeply"):
        path = tmp / "deep.toml"
        path.write_text("a = " + "[" * 5000 + "]" * 5000)
        load(path)
