"""Hyper-parameters: finding img-man, templates as defaults, and the web UI's config variants."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package_name }}.contract import params as params_module
from {{ cookiecutter.package_name }}.contract.env import Env, InputPaths, OutputPaths
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.contract.params import (
    RESERVED_KEYS,
    TEMPLATE_FILES,
    Params,
    find_img_man,
    load_config,
    load_manifest,
    load_template,
    manifest_object_type,
    task_defaults,
)

# Shaped like the stub executors' templates: every scalar type a template may hold.
TRAINING_TEMPLATE = """\
# annotation format of the exported dataset (reserved, read by the platform)
export_format: 'ark:raw'
# shared memory for the container
shm_size: '16G'
# passes over the training set
epochs: 10
# learning rate
learning_rate: 0.01
# synchronise batch norm across GPUs
sync_bn: false
# use automatic mixed precision
amp: true
# model name
model: baseline
# input size
img_size: [640, 640]
# free-form option, null by default
cfg_options: null
"""

MINING_TEMPLATE = """\
mining_algorithm: image_entropy
random_seed: 1
confidence_threshold: 0.05
shm_size: '16G'
"""

INFER_TEMPLATE = """\
confidence_threshold: 0.05
shm_size: '16G'
"""


def defaults() -> dict:
    return yaml.safe_load(TRAINING_TEMPLATE)


def make_env(tmp_path: Path, manifest_file: Path | None = None) -> Env:
    inputs = InputPaths(
        root_dir=tmp_path / "in",
        assets_dir=tmp_path / "in" / "assets",
        annotations_dir=tmp_path / "in" / "annotations",
        models_dir=tmp_path / "in" / "models",
        training_index_file=None,
        val_index_file=None,
        candidate_index_file=tmp_path / "in" / "candidate-index.tsv",
        config_file=tmp_path / "in" / "config.yaml",
    )
    outputs = OutputPaths(
        root_dir=tmp_path / "out",
        models_dir=tmp_path / "out" / "models",
        tensorboard_dir=tmp_path / "out" / "tensorboard",
        training_result_file=tmp_path / "out" / "models" / "result.yaml",
        mining_result_file=tmp_path / "out" / "result.tsv",
        infer_result_file=tmp_path / "out" / "infer-result.json",
        monitor_file=tmp_path / "out" / "monitor.txt",
        executor_log_file=None,
    )
    return Env("t1", False, False, True, "1.1.0", manifest_file, inputs, outputs)


def make_img_man(folder: Path, object_type: object = 2, **templates: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(dict(object_type=object_type)))
    for task, text in templates.items():
        (folder / TEMPLATE_FILES[task]).write_text(text)
    return folder


def expect_config_error(*fragments: str, code: ErrorCode = ErrorCode.CONFIG):
    """Context manager: a CONFIG ExecutorError whose message holds every fragment."""
    return _ExpectError(code, fragments)


class _ExpectError:
    def __init__(self, code, fragments):
        self.code = code
        self.fragments = fragments
        self._raises = pytest.raises(ExecutorError)

    def __enter__(self):
        self.info = self._raises.__enter__()
        return self.info

    def __exit__(self, *exc_info):
        suppressed = self._raises.__exit__(*exc_info)
        error = self.info.value
        assert error.code == self.code, error
        for fragment in self.fragments:
            assert fragment in error.message, (fragment, error.message)
        return suppressed


# --- constants ----------------------------------------------------------------------------


def test_template_file_names():
    assert TEMPLATE_FILES == {
        "training": "training-template.yaml",
        "mining": "mining-template.yaml",
        "infer": "infer-template.yaml",
    }


def test_reserved_keys():
    assert (
        frozenset(
            [
                "task_id",
                "class_names",
                "gpu_id",
                "gpu_count",
                "object_type",
                "pretrained_model_params",
                "model_params_path",
                "run_training",
                "run_mining",
                "run_infer",
                "export_format",
                "shm_size",
                "git_url",
                "git_branch",
                "code_config",
                "openpai_enable",
                "text_prompt",
            ]
        )
        == RESERVED_KEYS
    )


# --- find_img_man -------------------------------------------------------------------------


@pytest.fixture
def fake_layout(tmp_path, monkeypatch):
    """A source checkout at tmp/repo with params.py where it lives; /img-man points nowhere."""
    repo = tmp_path / "repo"
    module_file = repo / "src" / "pkg" / "contract" / "params.py"
    module_file.parent.mkdir(parents=True)
    module_file.write_text("")
    monkeypatch.setattr(params_module, "__file__", str(module_file))
    monkeypatch.setattr(params_module, "IMAGE_IMG_MAN", tmp_path / "image-img-man")
    return repo


def test_find_img_man_prefers_the_manifest_file_folder(tmp_path, fake_layout):
    manifest_dir = make_img_man(tmp_path / "from-env")
    make_img_man(tmp_path / "image-img-man")
    make_img_man(fake_layout / "src" / "pkg" / "img_man")
    make_img_man(fake_layout / "img-man")
    env = make_env(tmp_path, manifest_file=manifest_dir / "manifest.yaml")
    assert find_img_man(env) == manifest_dir


def test_find_img_man_uses_the_folder_even_without_a_manifest(tmp_path, fake_layout):
    folder = tmp_path / "from-env"
    folder.mkdir()
    make_img_man(tmp_path / "image-img-man")
    env = make_env(tmp_path, manifest_file=folder / "manifest.yaml")
    assert find_img_man(env) == folder


def test_find_img_man_then_the_image_folder(tmp_path, fake_layout):
    image = make_img_man(tmp_path / "image-img-man")
    make_img_man(fake_layout / "src" / "pkg" / "img_man")
    make_img_man(fake_layout / "img-man")
    # manifest_file names a folder that does not exist here (e.g. a leftover env.yaml).
    env = make_env(tmp_path, manifest_file=tmp_path / "gone" / "manifest.yaml")
    assert find_img_man(env) == image
    assert find_img_man(make_env(tmp_path)) == image


def test_find_img_man_reads_the_image_constant_at_call_time(tmp_path, fake_layout, monkeypatch):
    other = make_img_man(tmp_path / "other")
    monkeypatch.setattr(params_module, "IMAGE_IMG_MAN", other)
    assert find_img_man(make_env(tmp_path)) == other


def test_find_img_man_then_the_packaged_copy(tmp_path, fake_layout):
    packaged = make_img_man(fake_layout / "src" / "pkg" / "img_man")
    make_img_man(fake_layout / "img-man")
    assert find_img_man(make_env(tmp_path)) == packaged


def test_find_img_man_then_the_source_checkout(tmp_path, fake_layout):
    checkout = make_img_man(fake_layout / "img-man")
    assert find_img_man(make_env(tmp_path)) == checkout


def test_find_img_man_nothing_found(tmp_path, fake_layout):
    with expect_config_error("img-man", "manifest_file") as info:
        find_img_man(make_env(tmp_path, manifest_file=tmp_path / "gone" / "manifest.yaml"))
    # Every place searched is listed, so the user can see what is missing.
    assert str(tmp_path / "gone") in info.value.message
    assert str(tmp_path / "image-img-man") in info.value.message
    assert str(fake_layout / "img-man") in info.value.message


def test_source_checkout_is_three_levels_above_the_package():
    # src/<package>/contract/params.py: parents[3] is the repository root, which holds img-man/
    # in a source checkout (not in an installed wheel, where the packaged copy is used).
    here = Path(params_module.__file__).resolve()
    assert here.parents[0].name == "contract"
    if here.parents[2].name != "src":
        pytest.skip("package installed outside a source checkout")
    assert (here.parents[3] / "src").is_dir()


# --- manifest -----------------------------------------------------------------------------


def test_load_manifest(tmp_path):
    folder = make_img_man(tmp_path / "img-man", object_type=3)
    assert load_manifest(folder) == dict(object_type=3)


def test_load_manifest_missing_file_is_empty(tmp_path):
    assert load_manifest(tmp_path) == dict()
    (tmp_path / "manifest.yaml").write_text("")
    assert load_manifest(tmp_path) == dict()


def test_load_manifest_invalid_yaml(tmp_path):
    (tmp_path / "manifest.yaml").write_text("object_type: [2\n")
    with expect_config_error(str(tmp_path / "manifest.yaml"), "not valid YAML"):
        load_manifest(tmp_path)


def test_load_manifest_not_a_mapping(tmp_path):
    (tmp_path / "manifest.yaml").write_text("- 2\n")
    with expect_config_error("manifest.yaml", "mapping"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(("value", "expected"), [(2, 2), (3, 3), (4, 4), ([3], 3)])
def test_manifest_object_type(tmp_path, value, expected):
    assert manifest_object_type(make_img_man(tmp_path, object_type=value)) == expected


def test_manifest_object_type_defaults_to_detection_like_ymir(tmp_path):
    assert manifest_object_type(tmp_path) == 2  # no manifest.yaml
    (tmp_path / "manifest.yaml").write_text("enable_livecode: false\n")
    assert manifest_object_type(tmp_path) == 2  # no object_type key


@pytest.mark.parametrize("value", ["2", [2, 3], True, 2.0, dict(a=1)])
def test_manifest_object_type_malformed(tmp_path, value):
    with expect_config_error("object_type", "manifest.yaml"):
        manifest_object_type(make_img_man(tmp_path, object_type=value))


@pytest.mark.parametrize("value", [0, 1, 50, 100])
def test_manifest_object_type_unsupported(tmp_path, value):
    with expect_config_error("object_type", str(value), code=ErrorCode.OBJECT_TYPE):
        manifest_object_type(make_img_man(tmp_path, object_type=value))


# --- templates ----------------------------------------------------------------------------


def test_load_template(tmp_path):
    folder = make_img_man(tmp_path, training=TRAINING_TEMPLATE)
    assert load_template(folder, "training") == defaults()


def test_load_template_unsupported_task_is_none(tmp_path):
    folder = make_img_man(tmp_path, training=TRAINING_TEMPLATE)
    assert load_template(folder, "mining") is None  # missing file


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n", "3\n"])
def test_load_template_that_is_not_a_mapping_is_none(tmp_path, text):
    folder = make_img_man(tmp_path, infer=text)
    assert load_template(folder, "infer") is None


def test_load_template_invalid_yaml_is_an_error(tmp_path):
    folder = make_img_man(tmp_path, infer="confidence_threshold: [0.05\n")
    with expect_config_error("infer-template.yaml", "not valid YAML"):
        load_template(folder, "infer")


def test_load_template_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="deploy"):
        load_template(tmp_path, "deploy")


def test_task_defaults_later_wins(tmp_path):
    folder = make_img_man(
        tmp_path,
        mining=MINING_TEMPLATE + "confidence_threshold_note: mining\n",
        infer=INFER_TEMPLATE.replace("0.05", "0.3") + "only_infer: 1\n",
    )
    merged = task_defaults(folder, ["infer", "mining"])
    assert merged["confidence_threshold"] == 0.05  # mining overrides infer
    assert merged["only_infer"] == 1  # keys of both survive
    assert merged["mining_algorithm"] == "image_entropy"
    assert task_defaults(folder, ["mining", "infer"])["confidence_threshold"] == 0.3


def test_task_defaults_ignores_missing_templates(tmp_path):
    folder = make_img_man(tmp_path, infer=INFER_TEMPLATE)
    assert task_defaults(folder, ["training", "infer"]) == yaml.safe_load(INFER_TEMPLATE)
    assert task_defaults(folder, []) == dict()


# --- config.yaml --------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Env:
    env = make_env(tmp_path)
    env.input.config_file.parent.mkdir(parents=True, exist_ok=True)
    env.input.config_file.write_text(text, encoding="utf-8")
    return env


def test_load_config(tmp_path):
    env = write_config(tmp_path, "class_names: [dog, cat]\ngpu_id: '0'\nepochs: '5'\n")
    assert load_config(env) == dict(class_names=["dog", "cat"], gpu_id="0", epochs="5")


def test_load_config_keeps_unicode(tmp_path):
    env = write_config(tmp_path, "class_names: [狗, 猫]\n")
    assert load_config(env)["class_names"] == ["狗", "猫"]


def test_load_config_missing_file(tmp_path):
    env = make_env(tmp_path)
    with expect_config_error(str(env.input.config_file), "not found"):
        load_config(env)


@pytest.mark.parametrize(("text", "kind"), [("", "empty"), ("- 1\n", "list"), ("text\n", "str")])
def test_load_config_not_a_mapping(tmp_path, text, kind):
    env = write_config(tmp_path, text)
    with expect_config_error("config.yaml", "mapping", kind):
        load_config(env)


def test_load_config_invalid_yaml(tmp_path):
    env = write_config(tmp_path, "epochs: [1\n")
    with expect_config_error("config.yaml", "not valid YAML") as info:
        load_config(env)
    assert "\n" not in info.value.message


def test_load_config_unreadable(tmp_path):
    env = make_env(tmp_path)
    env.input.config_file.mkdir(parents=True)  # a folder where the file should be
    with expect_config_error("config.yaml", "cannot read"):
        load_config(env)


# --- Params: coercion to the template default's type ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (1.0, True),
        (0.0, False),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("t", True),
        ("T", True),
        ("yes", True),
        ("Yes", True),
        ("1", True),
        (" true ", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("f", False),
        ("no", False),
        ("NO", False),
        ("0", False),
    ],
)
def test_bool_default(value, expected):
    params = Params(dict(sync_bn=value), defaults())
    assert params.sync_bn is expected
    assert params["sync_bn"] is expected


@pytest.mark.parametrize("value", ["maybe", "2", 2, -1, 0.5, "truth", [True]])
def test_bool_default_bad_value(value):
    params = Params(dict(sync_bn=value), defaults())
    with expect_config_error("hyper-parameter 'sync_bn' must be a boolean", repr(value)):
        params.sync_bn  # noqa: B018


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        ("12.0", 12),
        (" 7 ", 7),
        ("-3", -3),
        ("3.0", 3),
        ("1e3", 1000),
        (0, 0),
    ],
)
def test_int_default(value, expected):
    params = Params(dict(epochs=value), defaults())
    assert params.epochs == expected
    assert type(params.epochs) is int


@pytest.mark.parametrize("value", ["abc", "3.5", 3.5, True, "inf", "nan", [1], "1,2"])
def test_int_default_bad_value(value):
    params = Params(dict(epochs=value), defaults())
    with expect_config_error("hyper-parameter 'epochs' must be an integer, got " + repr(value)):
        params.epochs  # noqa: B018


def test_int_error_message_as_documented():
    with pytest.raises(ExecutorError) as caught:
        Params(dict(epochs="abc"), defaults())["epochs"]
    assert caught.value.message.startswith("hyper-parameter 'epochs' must be an integer, got 'abc'")
    assert caught.value.code == ErrorCode.CONFIG


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), ("0.5", 0.5), (" .25 ", 0.25), (1, 1.0), ("10", 10.0), ("1e-3", 0.001), (0, 0.0)],
)
def test_float_default(value, expected):
    params = Params(dict(learning_rate=value), defaults())
    assert params.learning_rate == pytest.approx(expected)
    assert type(params.learning_rate) is float


@pytest.mark.parametrize("value", ["fast", "nan", "inf", True, [0.1], float("nan")])
def test_float_default_bad_value(value):
    params = Params(dict(learning_rate=value), defaults())
    with expect_config_error("hyper-parameter 'learning_rate' must be a"):
        params.learning_rate  # noqa: B018


@pytest.mark.parametrize(
    ("value", "expected"), [("yolo", "yolo"), (16, "16"), (0.5, "0.5"), (True, "True")]
)
def test_str_default(value, expected):
    assert Params(dict(model=value), defaults()).model == expected


def test_reserved_str_default_from_the_template():
    params = Params(dict(shm_size=32), defaults())
    assert params.shm_size == "32"
    assert Params(dict(), defaults()).export_format == "ark:raw"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([320, 320], [320, 320]),
        ("320,320", [320, 320]),
        ("[320, 480]", [320, 480]),
        (" 0.1, 0.2 ", [0.1, 0.2]),
        ("512", [512]),
    ],
)
def test_list_default_accepts_the_ui_text_form(value, expected):
    assert Params(dict(img_size=value), defaults()).img_size == expected


def test_list_default_bad_value():
    with expect_config_error("hyper-parameter 'img_size' must be a list"):
        Params(dict(img_size="[1, 2"), defaults()).img_size  # noqa: B018
    with expect_config_error("hyper-parameter 'img_size' must be a list"):
        Params(dict(img_size=5), defaults()).img_size  # noqa: B018


def test_null_default_passes_the_value_through():
    assert Params(dict(cfg_options="a=1 b=2"), defaults()).cfg_options == "a=1 b=2"
    assert Params(dict(cfg_options=3), defaults()).cfg_options == 3
    assert Params(dict(), defaults()).cfg_options is None


# --- Params: missing values, added keys, unknown keys --------------------------------------


def test_absent_keys_take_the_template_default():
    params = Params(dict(), defaults())
    assert params.epochs == 10
    assert params.learning_rate == 0.01
    assert params.sync_bn is False
    assert params.amp is True
    assert params.model == "baseline"
    assert params.img_size == [640, 640]


@pytest.mark.parametrize("value", [None, "", "   "])
def test_null_and_empty_values_take_the_default(value):
    params = Params(dict(epochs=value, amp=value, model=value), defaults())
    assert params.epochs == 10
    assert params.amp is True
    assert params.model == "baseline"


def test_falsy_values_that_are_given_are_kept():
    # Training submits 0 and false (only mining/infer drop them): they must win over defaults.
    params = Params(dict(amp=False, epochs=0, learning_rate=0), defaults())
    assert params.amp is False
    assert params.epochs == 0
    assert params.learning_rate == 0.0


def test_user_added_key_passes_through_unchanged():
    values = dict(my_text="False", my_number="0.5", my_list=[1, "2"], my_map=dict(a=1), my_int=3)
    params = Params(values, defaults())
    assert params.my_text == "False"
    assert params.my_number == "0.5"
    assert params.my_list == [1, "2"]
    assert params.my_map == dict(a=1)
    assert params["my_int"] == 3


def test_user_added_key_given_as_null():
    params = Params(dict(extra=None), defaults())
    assert "extra" in params
    assert params.extra is None


def test_unknown_hyper_parameter():
    params = Params(dict(), defaults())
    with expect_config_error("unknown hyper-parameter 'batch_size'"):
        params.batch_size  # noqa: B018
    with expect_config_error("unknown hyper-parameter 'batch_size'"):
        params["batch_size"]


def test_unknown_hyper_parameter_behaves_like_a_missing_attribute():
    params = Params(dict(), defaults())
    assert not hasattr(params, "batch_size")
    assert getattr(params, "batch_size", 8) == 8
    with pytest.raises(AttributeError):
        params.batch_size  # noqa: B018
    with pytest.raises(KeyError):
        params["batch_size"]


def test_get():
    params = Params(dict(epochs="4", extra="x"), defaults())
    assert params.get("epochs") == 4
    assert params.get("extra") == "x"
    assert params.get("model") == "baseline"
    assert params.get("missing") is None
    assert params.get("missing", 5) == 5


def test_get_still_checks_values():
    with expect_config_error("hyper-parameter 'epochs'"):
        Params(dict(epochs="many"), defaults()).get("epochs", 1)


def test_contains():
    params = Params(dict(extra=1), defaults())
    assert "extra" in params
    assert "epochs" in params
    assert "missing" not in params


def test_private_names_are_not_hyper_parameters():
    params = Params(dict(_secret=1), dict())
    with pytest.raises(AttributeError):
        params._secret  # noqa: B018
    assert params["_secret"] == 1


def test_names_that_clash_with_methods_are_read_by_item():
    params = Params(dict(get="x"), dict(as_dict=True))
    assert params["get"] == "x"
    assert params["as_dict"] is True
    assert callable(params.get)


def test_copy_and_pickle():
    params = Params(dict(epochs="3"), defaults())
    assert copy.copy(params).epochs == 3
    assert copy.deepcopy(params).epochs == 3
    assert pickle.loads(pickle.dumps(params)).epochs == 3


def test_params_keep_their_own_copies():
    values = dict(epochs="3")
    template = defaults()
    params = Params(values, template)
    values["epochs"] = "4"
    template["model"] = "changed"
    assert params.epochs == 3
    assert params.model == "baseline"


def test_repr_shows_effective_values_even_when_one_is_bad():
    text = repr(Params(dict(epochs="3", amp="maybe"), dict(epochs=1, amp=True)))
    assert "'epochs': 3" in text
    assert "maybe" in text


# --- Params.as_dict -----------------------------------------------------------------------


def test_as_dict_merges_coerces_and_drops_reserved_keys():
    config = dict(
        task_id="t1",
        class_names=["dog", "cat"],
        gpu_id="0",
        gpu_count=1,
        object_type=2,
        pretrained_model_params=["/in/models/last/baseline.json"],
        shm_size="32G",
        export_format="voc:raw",
        epochs="20",
        amp="False",
        my_key="kept",
    )
    result = Params(config, defaults()).as_dict()
    assert result == dict(
        epochs=20,
        learning_rate=0.01,
        sync_bn=False,
        amp=False,
        model="baseline",
        img_size=[640, 640],
        cfg_options=None,
        my_key="kept",
    )
    assert not RESERVED_KEYS & set(result)


def test_as_dict_keeps_template_order_then_added_keys():
    result = Params(dict(zzz=1, epochs=2), defaults()).as_dict()
    assert list(result) == [
        "epochs",
        "learning_rate",
        "sync_bn",
        "amp",
        "model",
        "img_size",
        "cfg_options",
        "zzz",
    ]


def test_as_dict_validates_every_value():
    with expect_config_error("hyper-parameter 'sync_bn'"):
        Params(dict(sync_bn="maybe"), defaults()).as_dict()


def test_reserved_keys_are_still_readable():
    params = Params(dict(class_names=["dog"], gpu_id=""), defaults())
    assert params.class_names == ["dog"]
    assert params["gpu_id"] == ""


# --- the web UI's config variants end to end -----------------------------------------------


def test_mining_config_as_the_ui_submits_it(tmp_path):
    """Mining drops falsy values and returns edited values as strings; users add keys."""
    img_man = make_img_man(tmp_path / "img-man", mining=MINING_TEMPLATE, infer=INFER_TEMPLATE)
    env = write_config(
        tmp_path,
        "\n".join(
            [
                "class_names: [dog, cat]",
                "gpu_count: 1",
                "gpu_id: '0'",
                "mining_algorithm: random",
                "model_params_path: [/in/models/last/baseline.json]",
                "random_seed: '7'",  # edited: a string now
                "run_infer: true",
                "run_mining: true",
                "task_id: t1",
                "my_option: 'False'",  # added by the user, passes through
                # confidence_threshold and shm_size were dropped by the UI: template defaults apply
                "",
            ]
        ),
    )
    params = Params(load_config(env), task_defaults(img_man, ["infer", "mining"]))
    assert params.mining_algorithm == "random"
    assert params.random_seed == 7
    assert math.isclose(params.confidence_threshold, 0.05)
    assert params.shm_size == "16G"
    assert params.my_option == "False"
    assert params.as_dict() == dict(
        confidence_threshold=0.05,
        mining_algorithm="random",
        random_seed=7,
        my_option="False",
    )


def test_training_config_with_string_booleans_and_numbers(tmp_path):
    img_man = make_img_man(tmp_path / "img-man", training=TRAINING_TEMPLATE)
    env = write_config(
        tmp_path,
        "\n".join(
            [
                "amp: 'False'",
                "epochs: '3.0'",
                "learning_rate: '0.5'",
                "sync_bn: 1",
                "img_size: '320,320'",
                "export_format: ark:raw",
                "",
            ]
        ),
    )
    params = Params(load_config(env), task_defaults(img_man, ["training"]))
    assert params.amp is False
    assert params.epochs == 3
    assert params.learning_rate == 0.5
    assert params.sync_bn is True
    assert params.img_size == [320, 320]
