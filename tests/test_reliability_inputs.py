"""Issue 34: config values and faults that were silently wrong or ended in a traceback. YAML that PyYAML
reads wrong (a key or section given twice: the last wins, the first is dropped) or crashes on (nesting
tens of thousands deep: RecursionError), floats past float32's range, and a full disk while a
checkpoint is written: each a one-line error naming what is wrong."""

from __future__ import annotations

import pytest

from ppokit import ConfigError, PPOConfig
from ppokit.cli import main
from ppokit.config import parse_value, parse_yaml


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.001\nn_steps: 64\nlearning_rate: 0.5\n")
    with pytest.raises(
        ConfigError, match=r"key 'learning_rate' is given twice in one mapping \(lines 1 and 3\)"
    ):
        PPOConfig.load_yaml(path)


def test_a_section_given_twice_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("network:\n  hidden_sizes: [32]\nn_steps: 64\nnetwork:\n  activation: relu\n")
    with pytest.raises(ConfigError, match=r"key 'network' is given twice"):
        PPOConfig.load_yaml(path)


def test_a_duplicate_inside_a_section_is_refused():
    with pytest.raises(ConfigError, match=r"key 'a' is given twice .*lines 2 and 3"):
        parse_yaml("s:\n  a: 1\n  a: 2\n")


def test_same_key_in_different_mappings_is_fine():
    assert parse_yaml("x: {a: 1}\ny: {a: 2}\n") == {"x": {"a": 1}, "y": {"a": 2}}


def test_deep_nesting_is_a_config_error_not_a_recursion_error():
    with pytest.raises(ConfigError, match="nests 60000 levels deep; at most 100"):
        parse_value("[" * 60_000 + "]" * 60_000)
    assert parse_value("[[1, 2], [3]]") == [[1, 2], [3]]  # ordinary nesting still parses


def test_cli_duplicate_key_and_deep_set_exit_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("n_steps: 64\nn_steps: 32\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(path), "--no-progress", "--run-dir", str(tmp_path / "r")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key 'n_steps' is given twice" in err
    with pytest.raises(SystemExit) as info:
        main(["train", "--set", "network.hidden_sizes=" + "[" * 60_000, "--run-dir", str(tmp_path / "r2")])
    assert info.value.code == 2
    assert "levels deep" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()  # nothing claimed


@pytest.mark.parametrize("key", ["learning_rate", "vf_clip_range"])
def test_floats_past_float32_range_are_refused(key):
    """learning_rate=3.4e37 / vf_clip_range=3.4e38 overflowed inside the update (a traceback)."""
    with pytest.raises(
        ConfigError, match=rf"{key}=3.4e\+37 is not allowed; its magnitude must be at most 1e\+30"
    ):
        PPOConfig.from_dict({key: 3.4e37})


def test_a_full_disk_while_writing_a_checkpoint_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as SafetensorError, which the command line showed as a traceback
    (issue 34): it becomes the OSError it stands for (one line at the CLI) and leaves no debris."""
    import errno

    import torch
    from safetensors import SafetensorError

    from ppokit.cli.boundary import user_message
    from ppokit.train import checkpoint

    def full_disk(tensors, filename):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError) as info:
        checkpoint.write_checkpoint(tmp_path / "step_1", {"w": torch.zeros(2)}, {"a": 1})
    assert info.value.errno == errno.ENOSPC and "No space left on device" in user_message(info.value)
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone
