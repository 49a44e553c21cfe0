"""The classic side's ``report_to: [wandb]`` (offline, no network: the run's rows are read back from
the offline run file) and ``device: auto``."""

from __future__ import annotations

import struct
import time

import pytest
import torch

from ppokit.config import ConfigError
from ppokit.plotting import read_csv
from ppokit.rl.config import PPOConfig
from ppokit.rl.ppo import PPO


def _wandb_records(path):
    """The protobuf records of a ``run-*.wandb`` file (LevelDB log format: 32 KiB blocks of chunks with
    a 7-byte header crc32/length/type, after wandb's 7-byte file header ``:W&B`` + magic + version)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if length == 0 and kind == 0:  # the padding at a block's end
            pos += left
            continue
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _finished_records(path, timeout: float = 60.0) -> list:
    """The records once the run's ``exit`` record is written: wandb's service process writes the
    file after ``finish()`` returns (seen: 7 bytes at once, complete a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_report_to_wandb_offline_holds_the_rows(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    cfg = dict(num_envs=2, n_steps=32, batch_size=64, n_epochs=1, report_to=["wandb"])
    model = PPO("CartPole-v1", cfg, run_dir=run)
    model.learn(192)
    model.close()
    assert not (run / "tb").exists()  # report_to lists where metrics go: TensorBoard was not asked for
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(run.rglob("*"))
    records = _finished_records(files[0])
    rows = [
        {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    csv_steps = read_csv(run / "metrics.csv")["time/total_timesteps"]
    assert [int(r["_step"]) for r in rows] == [int(s) for s in csv_steps] == [64, 128, 192]
    assert all("train/policy_loss" in r and "rollout/ep_rew_mean" in r for r in rows)
    config = [r.run.config for r in records if r.WhichOneof("record_type") == "run"]
    assert any(item.key == "n_steps" and item.value_json == "32" for c in config for item in c.update)


def test_report_to_is_validated():
    with pytest.raises(
        ConfigError, match=r"report_to=\['mlflow'\] is not allowed; use a list of tensorboard, wandb"
    ):
        PPOConfig(report_to=["mlflow"]).validate()


def test_device_auto(monkeypatch):
    assert PPOConfig.from_dict({"device": "auto"}).device == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert PPOConfig.from_dict({"device": "auto"}).device == "cuda"
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        PPOConfig.from_dict({"device": "gpu"})
