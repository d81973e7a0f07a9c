"""cfg_options: mmengine ``key=value`` overrides, parsed and applied on top of a config."""

from __future__ import annotations

import pytest
from mmengine.config import Config

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.openmmlab.options import (
    UI_MAX_LENGTH,
    apply_cfg_options,
    parse_cfg_options,
)


def test_empty_text_means_no_override() -> None:
    assert parse_cfg_options("") == {}
    assert parse_cfg_options("   ") == {}
    assert parse_cfg_options(None) == {}


def test_values_are_typed_like_mmengine_cfg_options() -> None:
    parsed = parse_cfg_options(
        "optim_wrapper.optimizer.lr=0.001 model.test_cfg.max_per_img=50 a=true b=None "
        "c=[1,2] d=(3,4) e=x,y f=text"
    )
    assert parsed == {
        "optim_wrapper.optimizer.lr": 0.001,
        "model.test_cfg.max_per_img": 50,
        "a": True,
        "b": None,
        "c": [1, 2],
        "d": (3, 4),
        "e": ["x", "y"],
        "f": "text",
    }


def test_quoted_values_and_list_indices() -> None:
    parsed = parse_cfg_options("'a=[1, 2]' custom_hooks.0.priority=40")
    assert parsed == {"a": [1, 2], "custom_hooks.0.priority": 40}


@pytest.mark.parametrize(
    "text",
    ["lr", "=3", "a..b=1", "1a=2", "a=1 a=2", "a='unclosed", "a=[1,2", "w=nan", "w=[1,inf]"],
)
def test_malformed_options_are_config_errors(text: str) -> None:
    with pytest.raises(ExecutorError) as raised:
        parse_cfg_options(text)
    assert raised.value.code == ErrorCode.CONFIG
    assert "cfg_options" in raised.value.message


def test_documented_example_fits_the_ui_limit() -> None:
    # The example the error message and the template give must itself be a valid UI value.
    example = "optim_wrapper.optimizer.lr=0.001 model.test_cfg.max_per_img=50"
    assert len(example) <= UI_MAX_LENGTH
    assert parse_cfg_options(example)


def test_apply_merges_into_nested_dicts_and_lists() -> None:
    cfg = Config(
        dict(
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.02, momentum=0.9)),
            custom_hooks=[dict(type="EMAHook", priority=49)],
        )
    )
    applied = apply_cfg_options(cfg, "optim_wrapper.optimizer.lr=0.5 custom_hooks.0.priority=40")
    assert applied == {"optim_wrapper.optimizer.lr": 0.5, "custom_hooks.0.priority": 40}
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.custom_hooks[0].priority == 40


def test_apply_adds_unknown_keys_with_a_warning(caplog) -> None:
    cfg = Config(dict(model=dict(type="X")))
    with caplog.at_level("WARNING"):
        apply_cfg_options(cfg, "find_unused_parameters=true")
    assert cfg.find_unused_parameters is True
    assert "find_unused_parameters" in caplog.text
