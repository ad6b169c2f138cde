"""The trainer options of ``tnborn train`` come from the settings dataclasses
(tnborn/cli_commands/_settings.py): every field is a flag and a TOML key, with
the field's default and help, and per-loop schedules work on the command line
and in TOML exactly as in Python."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import pytest

import tnborn
from tnborn.cli import SETTING_OPTIONS, TRAIN_OPTIONS, build_parser, load_config, main, resolve_train_options
from tnborn.cli_commands import _settings
from tnborn.cli_commands._common import Reporter, cli_message
from tnborn.cli_commands.train import _build
from tnborn.data import bars_and_stripes
from tnborn.errors import ConfigError
from tnborn.training.settings import GradientSettings, Settings, SweepSettings, setting

BAS = ["--dataset", "bars-and-stripes", "--rows", "2", "--cols", "3", "--threads", "1", "--quiet"]
CLASSES = {"sweep": SweepSettings, "gradient": GradientSettings}


def all_fields():
    """(trainer, field) for every field of both settings classes."""
    return [(kind, f.name) for kind, cls in CLASSES.items() for f in fields(cls)]


def other_value(cls: type[Settings], name: str):
    """A valid value of field ``name`` that differs from its default (and its command-line spelling)."""
    spec, default = cls.spec(name), cls.default(name)
    if spec["choices"]:
        value = next(c for c in spec["choices"] if c != default)
    elif spec["kind"] == "int":
        value = 3 if default is None else default + 1
    else:
        value = 0.25 if default is None else (0.5 if default == 0 else default / 2)
    return value, str(value)


def build_from(argv: list[str]):
    """Model and trainer that ``tnborn train ARGV`` would build (no training, no files)."""
    args = build_parser().parse_args(["train", *argv])
    options, explicit = resolve_train_options(args)
    model, trainer, overrides = _build(options, explicit, 6, Reporter(True))
    return trainer, overrides


@pytest.mark.parametrize("kind, name", all_fields())
def test_every_setting_is_a_flag_and_a_toml_key(kind, name, tmp_path):
    cls = CLASSES[kind]
    key = cls.flag_name(name)
    if name in _settings.RUN_FIELDS:
        assert key in TRAIN_OPTIONS  # set by the run option of the same name
        return
    assert key in SETTING_OPTIONS and kind in SETTING_OPTIONS[key].trainers
    value, text = other_value(cls, name)
    # the command line reaches the trainer's settings
    argv = [*BAS, "--trainer", kind, "--" + key.replace("_", "-"), text]
    trainer, _ = build_from(argv)
    assert getattr(trainer.settings, name) == value
    # so does the TOML key, with the value's TOML type
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"{key} = {json.dumps(value)}\n")
    assert load_config(cfg) == {key: value}


@pytest.mark.parametrize("kind, name", all_fields())
def test_defaults_come_from_the_dataclass(kind, name):
    """Without the flag each trainer keeps its own default (no drift: the gradient lr is 0.01)."""
    trainer, _ = build_from([*BAS, "--trainer", kind])
    assert getattr(trainer.settings, name) == CLASSES[kind].default(name)


def test_help_shows_each_default_and_help_text(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for key, opt in SETTING_OPTIONS.items():
        assert "--" + key.replace("_", "-") in out, key
        first_words = " ".join(opt.help.split()[:4])
        assert first_words in out, key
    assert "(default 0.1 with the sweep trainer, 0.01 with the gradient trainer)" in out
    assert "--steps K gradient steps per bond (default 10)" in out


def test_a_schedule_on_the_command_line_equals_one_in_python(tmp_path):
    """The authors' MNIST schedule shape (start loop, then main loops) as one command."""
    out = tmp_path / "run"
    schedule = ["--lr", "0.1,0.05", "--cutoff", "1e-3,5e-5", "--batch-size", "none,5", "--steps", "4,6"]
    assert main(["train", *BAS, *schedule, "--loops", "3", "--out", str(out)]) == 0
    cli = json.loads((out / "history.json").read_text())
    model = tnborn.MPSBornMachine.random(6, bond_dim=2, seed=0)
    trainer = tnborn.SweepTrainer(model, lr=[0.1, 0.05], cutoff=[1e-3, 5e-5], batch_size=[None, 5],
                                  descent_steps=[4, 6], progress=False)
    python = trainer.fit(bars_and_stripes(2, 3), loops=3)
    assert [r["train_nll"] for r in cli] == [r["train_nll"] for r in python]  # same arithmetic, same order
    assert [r["settings"]["lr"] for r in cli] == [0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    assert cli[-1]["settings"]["descent_steps"] == 6
    assert cli[0]["settings"]["batch_size"] is None and cli[-1]["settings"]["batch_size"] == 5


def test_a_schedule_in_toml_equals_the_command_line(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("lr = [0.1, 0.05]\ncutoff = [0.01, 5e-5]\nbatch_size = [5, 2]\n")
    from_toml, _ = build_from([*BAS, "--config", str(cfg)])
    from_flags, _ = build_from([*BAS, "--lr", "0.1,0.05", "--cutoff", "0.01,5e-5", "--batch-size", "5,2"])
    assert from_toml.settings == from_flags.settings
    assert from_toml.settings.lr == [0.1, 0.05] and from_toml.settings.batch_size == [5, 2]


@pytest.mark.parametrize("argv, words", [
    (["--svd-method", "svd,svd:eig"], ["argument --svd-method", "takes one value"]),
    (["--lr", "0.1,abc"], ["argument --lr", "must be a number", "'abc'"]),
    (["--max-bond", "4,x"], ["argument --max-bond", "integer or 'none'"]),
    (["--gradient-rescale", "norm"], ["argument --gradient-rescale", "one of none, norm0.25"]),
    (["--trainer", "gradient", "--optimizer", "lbfgs"], ["argument --optimizer", "one of adam, sgd"]),
])
def test_bad_setting_values_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *BAS, *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and all(w in err for w in words), err


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], ["--steps must be an integer >= 1, got 0"]),
    (["--lr", "0.1,-1"], ["--lr must be a positive finite number", "loop 2"]),
    (["--trainer", "gradient", "--momentum", "1.5"], ["--momentum must be in [0, 1)"]),
    (["--max-nll-rise", "-1"], ["--max-nll-rise must be a finite number >= 0"]),
])
def test_out_of_range_settings_exit_2_before_any_folder(argv, words, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["train", *BAS, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tnborn: error:") and all(w in err for w in words), err
    assert not out.exists()


def test_a_list_in_toml_for_a_one_value_setting_is_refused(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('svd_method = ["svd", "svd:eig"]\n')
    with pytest.raises(ConfigError, match="takes one value"):
        load_config(cfg)


def test_messages_use_the_generated_flag_names():
    assert cli_message("descent_steps must be an integer") == "--steps must be an integer"
    assert cli_message("failed; pass max_nll_rise=0: the guard") == "failed; pass --max-nll-rise 0: the guard"
    assert cli_message("pass threshold= to binarise") == "pass --threshold to binarise"
    assert cli_message("grad_clip must be a positive finite number") == "--grad-clip must be a positive finite number"


def test_one_option_per_field_needs_one_declaration(monkeypatch):
    """The generator refuses a field that two settings classes declare with different kinds."""

    @dataclass
    class OtherSettings(Settings):
        """Test settings.

        Attributes
        ----------
        lr : int
            A learning rate declared as an integer.
        """

        lr: int = setting(1, "int", "LR")

    monkeypatch.setitem(_settings.TRAINER_SETTINGS, "gradient", OtherSettings)
    with pytest.raises(TypeError, match="'lr' is declared differently"):
        _settings.setting_options()
