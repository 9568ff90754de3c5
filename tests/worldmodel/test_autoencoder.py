"""Tests for the autoencoder (stage 1) and its training job worldmodel.train_autoencoder."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from worldmodel.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    autoencoder_config,
    float_to_frames,
    frames_to_float,
)
from worldmodel.train_autoencoder import load_autoencoder, main, train_autoencoder
from worldmodel.utils import atomic_torch_save, check_config, config_diff, image_strip, torch_load


def _frames(n=6, seed=0):
    """uint8 (n, 64, 64, 3) frames with structure: a gradient background and a coloured square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    out = np.zeros((n, 64, 64, 3), np.uint8)
    for i in range(n):
        out[i] = np.stack([xx * 3 % 256, yy * 3 % 256, np.full_like(xx, 40 * i % 256)], -1)
        y, x = rng.integers(0, 48, size=2)
        out[i, y : y + 16, x : x + 16] = rng.integers(0, 256, size=3)
    return out


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return Autoencoder(autoencoder_config("tiny")).eval()


def _split(folder):
    paths = sorted(folder.glob("*.npz"))
    return paths[:-1], paths[-1:]


def test_presets_and_latent_shapes():
    """Presets give the contracted latent grids: cpu 8x8x8, tiny 8x8 grid, paper 16x16; overrides apply."""
    assert autoencoder_config("cpu").latent_shape == (8, 8, 8)
    assert autoencoder_config("tiny").latent_shape[1:] == (8, 8)
    assert autoencoder_config("paper").latent_shape[1:] == (16, 16)
    assert autoencoder_config("cpu", latent_channels=16).latent_shape == (16, 8, 8)
    assert Autoencoder(autoencoder_config("cpu")).latent_shape == (8, 8, 8)
    with pytest.raises(ValueError, match="unknown autoencoder preset 'huge'"):
        autoencoder_config("huge")


def test_config_validation_names_the_field():
    """An inconsistent config is refused with the field and the expected size."""
    with pytest.raises(ValueError, match=r"channels needs log2\(downsample\) \+ 1 = 4 entries"):
        AutoencoderConfig(channels=(8, 16))
    with pytest.raises(ValueError, match="downsample must be a power of two"):
        AutoencoderConfig(downsample=6)
    with pytest.raises(ValueError, match="unknown field"):
        AutoencoderConfig.from_dict({"latent_chans": 3})


def test_frame_conversions_round_trip():
    """uint8 -> float -> uint8 is exact, with the documented layouts and ranges."""
    f = _frames(3)
    x = frames_to_float(f)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(x[1, 0, 5, 7], torch.tensor(f[1, 5, 7, 0] / 255.0, dtype=torch.float32))
    back = float_to_frames(x)
    assert back.dtype == torch.uint8 and np.array_equal(back.numpy(), f)


def test_encode_decode_shapes_dtypes_and_determinism():
    """encode: uint8 BHWC or float BCHW -> (B, C, h, w) deterministically; decode -> float in [0, 1]."""
    m = _tiny_model()
    f = _frames(4)
    z = m.encode(torch.from_numpy(f))
    assert z.shape == (4, *m.latent_shape) and z.dtype == torch.float32
    assert torch.equal(z, m.encode(f))  # numpy input, and deterministic (posterior mean)
    assert torch.allclose(z, m.encode(frames_to_float(f)), atol=1e-6)
    x = m.decode(z)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def test_bad_inputs_are_named():
    """Wrong frame or latent shapes raise errors that state the expected shape."""
    m = _tiny_model()
    with pytest.raises(ValueError, match=r"uint8 frames must be \(B, 64, 64, 3\), got \(2, 32, 32, 3\)"):
        m.encode(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"float frames must be \(B, 3, 64, 64\)"):
        m.encode(torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"latents must be \(B, 4, 8, 8\), got \(2, 4, 4, 4\)"):
        m.decode(torch.zeros(2, 4, 4, 4))


def test_latent_normalisation():
    """After set_latent_stats, encoded training frames have ~0 mean and unit std per channel, and the
    reconstruction is unchanged (decode undoes the normalisation)."""
    m = _tiny_model()
    f = _frames(8)
    with torch.no_grad():
        before = m.reconstruct(f)
        raw = m.encode(f)
    m.set_latent_stats(f, batch_size=3)
    assert bool(m.stats_ready)
    with torch.no_grad():
        z = m.encode(f).double()
        after = m.reconstruct(f)
    per_ch = z.transpose(0, 1).reshape(z.shape[1], -1)
    assert torch.allclose(per_ch.mean(1), torch.zeros(z.shape[1], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(per_ch.std(1, unbiased=False), torch.ones(z.shape[1], dtype=torch.float64), atol=1e-3)
    assert not torch.allclose(raw, z.float(), atol=1e-3)  # the stats did change the latents
    assert torch.allclose(before, after, atol=1e-5)


def test_loss_logs_and_overfit():
    """loss() returns the slash-named logs, and overfitting a handful of frames lowers the loss a lot."""
    torch.manual_seed(0)
    m = Autoencoder(autoencoder_config("tiny")).train()
    f = torch.from_numpy(_frames(4))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    loss, logs = m.loss(f)
    assert set(logs) == {"ae/loss", "ae/recon", "ae/kl", "ae/psnr"}
    assert loss.dim() == 0 and loss.requires_grad and logs["ae/loss"] == pytest.approx(loss.item())
    first_psnr = logs["ae/psnr"]
    first = loss.item()
    for _ in range(120):
        loss, logs = m.loss(f)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["ae/loss"] < 0.3 * first, (first, logs)
    assert logs["ae/psnr"] > first_psnr + 5.0


def test_train_save_load_round_trip(synthetic_episodes, tmp_path):
    """train_autoencoder writes checkpoint, report and strip; load_autoencoder reproduces outputs exactly."""
    train, test = _split(synthetic_episodes(n=3, steps=20))
    out = tmp_path / "ae"
    model, report = train_autoencoder(
        autoencoder_config("tiny"), train, test, out, steps=4, batch_size=4, device="cpu", log=False
    )
    assert {"autoencoder.pt", "autoencoder_report.json", "autoencoder_strip.png"} <= {p.name for p in out.iterdir()}
    rep = json.loads((out / "autoencoder_report.json").read_text())
    assert rep["n_frames"] == 21 and rep["steps"] == 4 and rep["psnr_mean"] == pytest.approx(report["psnr_mean"])
    assert "lpips" in rep and 0 < rep["ssim_mean"] <= 1
    loaded = load_autoencoder(out / "autoencoder.pt")
    f = _frames(3)
    with torch.no_grad():
        assert torch.equal(loaded.encode(f), model.encode(f))
        z = torch.randn(2, *loaded.latent_shape)
        assert torch.equal(loaded.decode(z), model.decode(z))
    assert torch.equal(loaded.latent_std, model.latent_std) and bool(loaded.stats_ready)


def test_mismatched_config_names_fields(synthetic_episodes, tmp_path):
    """Loading or resuming with a different config lists each differing field with both values."""
    train, test = _split(synthetic_episodes(n=2, steps=12))
    cfg = autoencoder_config("tiny")
    train_autoencoder(cfg, train, test, tmp_path, steps=2, batch_size=2, device="cpu", log=False)
    other = dataclasses.replace(cfg, latent_channels=8, kl_weight=0.5)
    with pytest.raises(ValueError, match="2 field") as e:
        load_autoencoder(tmp_path / "autoencoder.pt", expected=other)
    assert "kl_weight: expected 0.5, checkpoint has 1e-06" in str(e.value)
    assert "latent_channels: expected 8, checkpoint has 4" in str(e.value)
    with pytest.raises(ValueError, match="latent_channels"):
        train_autoencoder(other, train, test, tmp_path, steps=3, batch_size=2, device="cpu", log=False, resume=True)


def test_resume_equals_uninterrupted(synthetic_episodes, tmp_path):
    """Stopping after 3 steps and resuming gives bit-identical weights to an uninterrupted 6-step run."""
    train, test = _split(synthetic_episodes(n=3, steps=15))
    cfg = autoencoder_config("tiny")
    kw = dict(steps=6, batch_size=4, device="cpu", log=False, seed=3)
    full, rep_full = train_autoencoder(cfg, train, test, tmp_path / "full", **kw)
    _, partial = train_autoencoder(cfg, train, test, tmp_path / "cut", stop_after=3, **kw)
    assert partial == {"stopped_at": 3}
    with pytest.raises(ValueError, match="unfinished autoencoder run"):
        load_autoencoder(tmp_path / "cut" / "autoencoder.pt")
    resumed, rep_res = train_autoencoder(cfg, train, test, tmp_path / "cut", resume=True, **kw)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert rep_res["psnr_mean"] == rep_full["psnr_mean"]


def test_nan_loss_stops_and_keeps_checkpoint(synthetic_episodes, tmp_path, monkeypatch):
    """A NaN loss raises a clear error and leaves the last good checkpoint (step 2) on disk."""
    train, test = _split(synthetic_episodes(n=2, steps=10))
    calls = {"n": 0}
    real_loss = Autoencoder.loss

    def flaky(self, frames, **kw):
        calls["n"] += 1
        loss, logs = real_loss(self, frames, **kw)
        if calls["n"] == 4:
            return loss * float("nan"), {**logs, "ae/loss": float("nan")}
        return loss, logs

    monkeypatch.setattr(Autoencoder, "loss", flaky)
    with pytest.raises(FloatingPointError, match="loss is nan at step 3.*last good checkpoint"):
        train_autoencoder(
            autoencoder_config("tiny"),
            train,
            test,
            tmp_path,
            steps=10,
            batch_size=2,
            device="cpu",
            log=False,
            ckpt_every=2,
        )
    assert torch_load(tmp_path / "autoencoder.pt")["step"] == 2


def test_cli_help_and_bad_folders(synthetic_episodes, tmp_path, capsys):
    """--help documents the options; an empty or one-episode folder gives a clear error (exit code 2)."""
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--resume" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["--preset", "tiny", "--episodes", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no episode files" in capsys.readouterr().err
    one = synthetic_episodes(n=1, steps=5, folder="one")
    assert main(["--preset", "tiny", "--episodes", str(one), "--out", str(tmp_path / "o")]) == 2
    assert "need at least 2 episodes (one is held out), found 1" in capsys.readouterr().err


def test_cli_trains_and_resumes(synthetic_episodes, tmp_path, capsys):
    """The CLI trains, writes TensorBoard logs, and --resume extends the same run to more steps."""
    eps = synthetic_episodes(n=3, steps=10)
    args = [
        "--preset",
        "tiny",
        "--episodes",
        str(eps),
        "--out",
        str(tmp_path / "run"),
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    assert main(args + ["--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["n_frames"] == 11
    assert any((tmp_path / "run" / "tb").iterdir())
    assert main(args + ["--steps", "3", "--resume"]) == 0
    assert torch_load(tmp_path / "run" / "autoencoder.pt")["step"] == 3


def test_utils_config_diff_atomic_save_and_strip(tmp_path):
    """config_diff lists fields; atomic_torch_save round-trips via weights_only load; strips stack rows."""
    cfg = autoencoder_config("tiny")
    assert config_diff(cfg, dataclasses.asdict(cfg)) == []
    check_config(cfg, dataclasses.asdict(cfg))
    d = dataclasses.asdict(dataclasses.replace(cfg, norm_groups=2))
    assert config_diff(cfg, d) == ["norm_groups: expected 4, checkpoint has 2"]
    atomic_torch_save({"a": torch.arange(3), "cfg": dataclasses.asdict(cfg)}, tmp_path / "x.pt")
    back = torch_load(tmp_path / "x.pt")
    assert torch.equal(back["a"], torch.arange(3)) and [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    real = frames_to_float(_frames(3))
    strip = image_strip(real, real * 0.5)
    assert strip.shape == (3 * 64 + 2 * 2, 3 * 64 + 2 * 2, 3) and strip.dtype == np.uint8
    assert np.array_equal(strip[:64, :64], _frames(1)[0])


def test_an_existing_checkpoint_is_not_overwritten_without_resume(synthetic_episodes, tmp_path, capsys):
    """Like worldmodel.train, stage 1 refuses to overwrite OUT/autoencoder.pt unless asked to resume it."""
    train, test = _split(synthetic_episodes(n=2, steps=8))
    cfg = autoencoder_config("tiny")
    train_autoencoder(cfg, train, test, tmp_path / "ae", steps=2, batch_size=2, device="cpu", log=False)
    before = (tmp_path / "ae" / "autoencoder.pt").read_bytes()
    with pytest.raises(FileExistsError, match="autoencoder.pt exists: pass --resume"):
        train_autoencoder(cfg, train, test, tmp_path / "ae", steps=3, batch_size=2, device="cpu", log=False)
    eps = synthetic_episodes(n=3, steps=8, folder="cli")
    args = ["--preset", "tiny", "--episodes", str(eps), "--out", str(tmp_path / "ae"), "--steps", "3"]
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (tmp_path / "ae" / "autoencoder.pt").read_bytes() == before


@pytest.mark.parametrize(
    "args, named",
    [
        (["--threads", "0"], "--threads=0"),
        (["--steps", "0"], "--steps=0"),
        (["--batch-size", "-1"], "--batch-size=-1"),
        (["--lr", "0"], "--lr 0"),
        (["--test-fraction", "1"], "--test-fraction 1"),
    ],
)
def test_cli_refuses_bad_arguments_before_any_work(args, named, synthetic_episodes, tmp_path, capsys, monkeypatch):
    """A bad argument exits with status 2 and a message naming it, before anything is written."""
    monkeypatch.setenv("COLUMNS", "250")
    eps = synthetic_episodes(n=2, steps=8)
    with pytest.raises(SystemExit) as e:
        main(["--preset", "tiny", "--episodes", str(eps), "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_names_an_episode_of_the_wrong_frame_size(synthetic_episodes, tmp_path, capsys):
    """A 32-px episode is refused before training, naming the file and the 64x64 frames expected."""
    eps = synthetic_episodes(n=3, steps=8)
    small = eps / "ep_00002.npz"
    with np.load(small) as f:
        data = {k: f[k] for k in f.files}
    data["image"] = np.ascontiguousarray(data["image"][:, ::2, ::2])
    np.savez_compressed(small, **data)
    assert main(["--preset", "tiny", "--episodes", str(eps), "--out", str(tmp_path / "o")]) == 2
    assert "ep_00002.npz: frames are 32x32x3, the autoencoder expects 64x64x3" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_locks_its_folder_and_records_the_split(synthetic_episodes, tmp_path, capsys):
    """A second job on a locked folder is refused naming the holder; a run records its split in OUT/split.json."""
    eps = synthetic_episodes(n=3, steps=8)
    out = tmp_path / "o"
    out.mkdir()
    hold = (
        "import sys, time\nfrom envs.fileio import RunLock\nRunLock(sys.argv[1], what='training').acquire()\n"
        "print('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    args = [
        "--preset",
        "tiny",
        "--episodes",
        str(eps),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(args) == 2
        assert str(holder.pid) in capsys.readouterr().err
        assert not (out / "autoencoder.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0
    split = json.loads((out / "split.json").read_text())
    assert sorted([*split["train"], *split["test"]]) == [f"ep_{i:05d}.npz" for i in range(3)]
