"""Episode files: validation, named errors, the store's split, and the window sampler (no simulator)."""

import warnings
import zipfile

import numpy as np
import pytest
import torch

from envs.episodes import (
    OFFICIAL_KEYS,
    EpisodeError,
    EpisodeStore,
    WindowSampler,
    derived_seed,
    episode_length,
    file_digest,
    load_episode,
    save_episode,
)


def fake_episode(steps: int, seed: int = 0, n_targets: int = 3, size: int = 9) -> dict[str, np.ndarray]:
    """A synthetic episode with every official key, in our on-disk dtypes."""
    rng = np.random.default_rng(seed)
    n = steps + 1
    action = np.zeros((n, 6), np.float32)
    action[np.arange(1, n), rng.integers(0, 6, steps)] = 1.0
    reward = np.zeros(n, np.float32)
    reward[rng.integers(1, n)] = 1.0
    return {
        "image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
        "action": action,
        "reward": reward,
        "maze_layout": np.repeat(rng.integers(0, 2, (1, size, size), dtype=np.uint8), n, axis=0),
        "agent_pos": rng.uniform(0, size, (n, 2)),
        "agent_dir": rng.normal(size=(n, 2)),
        "targets_pos": rng.uniform(0, size, (n, n_targets, 2)),
        "targets_vec": rng.normal(size=(n, n_targets, 2)),
        "target_pos": rng.uniform(0, size, (n, 2)),
        "target_vec": rng.normal(size=(n, 2)),
        "target_color": rng.uniform(0, 1, (n, 3)),
    }


def write_raw(path, **arrays):
    """Write an .npz without our validation (to fake bad or official files)."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


@pytest.fixture
def folder(tmp_path):
    """Four valid episodes of 20, 30, 12 and 41 frames."""
    for i, steps in enumerate([19, 29, 11, 40]):
        save_episode(tmp_path / f"ep_{i:05d}.npz", fake_episode(steps, seed=i))
    return tmp_path


def test_save_and_load_round_trip(tmp_path):
    """save_episode writes atomically and load_episode returns the same arrays and keys."""
    data = fake_episode(15)
    path = save_episode(tmp_path / "ep_00000.npz", data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep_00000.npz"]  # no temp file left behind
    back = load_episode(path)
    assert sorted(back) == sorted(OFFICIAL_KEYS)
    for k in data:
        np.testing.assert_array_equal(back[k], data[k])
        assert back[k].dtype == data[k].dtype
    assert episode_length(path) == 16
    only = load_episode(path, keys=["image", "agent_pos"])
    assert sorted(only) == ["agent_pos", "image"]
    with pytest.raises(EpisodeError, match=r"ep_00000\.npz: missing key\(s\) \['phase'\]"):
        load_episode(path, keys=["phase"])


def test_official_style_file_loads(tmp_path):
    """An official-style file (float64 one-hot, extra terminal/reset keys) loads unchanged."""
    data = fake_episode(10)
    data["action"] = data["action"].astype(np.float64)
    data["reward"] = data["reward"].astype(np.float64)
    path = write_raw(
        tmp_path / "20220101T000000-r1-0010.npz",
        **data,
        terminal=np.zeros(11, bool),
        reset=np.eye(1, 11, dtype=bool)[0],
    )
    back = load_episode(path)
    assert "terminal" not in back and back["action"].dtype == np.float64
    np.testing.assert_array_equal(back["image"], data["image"])


def test_truncated_file_error_names_file(tmp_path):
    """A truncated archive raises EpisodeError naming the file and saying it is corrupt or truncated."""
    path = save_episode(tmp_path / "ep_00000.npz", fake_episode(10))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EpisodeError, match=r"ep_00000\.npz: not a readable \.npz archive \(corrupt or trunc"):
        load_episode(path)


def test_corrupt_member_error_names_file(tmp_path):
    """Garbage inside a member (valid zip, bad array data) raises EpisodeError naming the file."""
    path = tmp_path / "ep_00001.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("image.npy", b"this is not an npy array")
    with pytest.raises(EpisodeError, match=r"ep_00001\.npz: not a readable"):
        load_episode(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(image=d["image"][..., 0]), r"'image' has shape \(11, 64, 64\), expected \(T\+1, H, W, 3\)"),
        (lambda d: d.update(image=d["image"].astype(np.float32)), r"'image' has dtype float32, expected uint8"),
        (lambda d: d.pop("action"), r"missing key\(s\) \['action'\]"),
        (lambda d: d.update(reward=d["reward"][:-1]), r"'reward' has shape \(10,\), expected \(11,\)"),
        (lambda d: d.update(agent_pos=d["agent_pos"][:, :1]), r"'agent_pos' has shape \(11, 1\), expected \(11, 2\)"),
        (lambda d: d.update(targets_vec=d["targets_vec"][:, :2]), r"'targets_vec' has 2 targets but another"),
        (lambda d: d["action"].__setitem__((3, slice(None)), 0), r"'action' row 3 is not one-hot"),
        (lambda d: d["agent_dir"].__setitem__((2, 0), np.nan), r"'agent_dir' has non-finite values"),
        (lambda d: d.update(action_box=np.zeros((11, 3))), r"'action_box' has shape \(11, 3\), expected \(11, 4\)"),
    ],
    ids=[
        "image-shape",
        "image-dtype",
        "missing-key",
        "time-axis",
        "trailing-shape",
        "n-targets",
        "one-hot",
        "nan",
        "action-box",
    ],
)
def test_wrongly_shaped_file_errors(tmp_path, mutate, message):
    """Each kind of wrong content raises EpisodeError naming the file, the key and what was expected."""
    data = fake_episode(10)
    mutate(data)
    path = write_raw(tmp_path / "bad.npz", **data)
    with pytest.raises(EpisodeError, match=r"bad\.npz: " + message) as info:
        load_episode(path)
    assert info.value.path == path
    with pytest.raises(EpisodeError, match=r"never\.npz: " + message):
        save_episode(tmp_path / "never.npz", data)  # the writer validates too, and writes nothing
    assert not (tmp_path / "never.npz").exists()


def test_object_array_is_refused(tmp_path):
    """A pickled object array is refused (allow_pickle=False) with a message naming the key."""
    data = fake_episode(4)
    data["reward"] = np.array([None] * 5, dtype=object)
    path = write_raw(tmp_path / "pickled.npz", **data)
    with pytest.raises(EpisodeError, match=r"pickled\.npz: 'reward' holds Python objects"):
        load_episode(path)


def test_store_lists_sorted_paths_and_lengths(folder):
    """EpisodeStore finds the *.npz files in order with their frame counts; temp files are ignored."""
    (folder / ".ep_00009.npz.123.tmp").write_bytes(b"partial")
    store = EpisodeStore(folder)
    assert [p.name for p in store.paths] == [f"ep_{i:05d}.npz" for i in range(4)]
    assert store.lengths == [20, 30, 12, 41] and len(store) == 4 and store.bad == []


def test_store_bad_file_raises_or_is_skipped(folder):
    """A corrupt file fails the store naming it; with skip_bad=True it is listed in .bad and warned about."""
    bad = folder / "ep_00002.npz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(EpisodeError, match=r"ep_00002\.npz: not a readable"):
        EpisodeStore(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = EpisodeStore(folder, skip_bad=True)
    assert [p.name for p in store.paths] == ["ep_00000.npz", "ep_00001.npz", "ep_00003.npz"]
    assert [(p.name, "corrupt or truncated" in why) for p, why in store.bad] == [("ep_00002.npz", True)]
    assert any("ep_00002.npz" in str(w.message) for w in caught)


def test_store_missing_or_empty_folder_errors(tmp_path):
    """A missing or empty folder raises an error naming the folder."""
    with pytest.raises(FileNotFoundError, match=r"nope does not exist"):
        EpisodeStore(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no episode files"):
        EpisodeStore(tmp_path / "empty")


def test_split_is_deterministic_disjoint_and_never_empty(tmp_path, folder):
    """split() is a deterministic partition by episode; test is non-empty with >= 2 episodes."""
    store = EpisodeStore(folder)
    train, test = store.split(test_fraction=0.1, seed=0)
    assert (train, test) == store.split(test_fraction=0.1, seed=0)
    assert len(test) == 1 and sorted(train + test) == store.paths and not set(train) & set(test)
    halves = store.split(test_fraction=0.5, seed=3)
    assert len(halves[1]) == 2
    two = tmp_path / "two"
    two.mkdir()
    for i in range(2):
        save_episode(two / f"ep_{i:05d}.npz", fake_episode(5, seed=i))
    tr, te = EpisodeStore(two).split(test_fraction=0.0)
    assert len(tr) == 1 and len(te) == 1
    assert EpisodeStore(two).split(test_fraction=0.99)[0]  # train never empty either


def test_window_sampler_is_uniform_over_windows_and_in_range(folder):
    """Every drawn window lies inside its episode and each (episode, start) pair is about equally likely."""
    store = EpisodeStore(folder)
    sampler = WindowSampler(store.lengths, store.paths)
    # lengths 20, 30, 12, 41 -> 11 + 21 + 3 + 32 windows of 10 frames
    assert sampler.count(10) == 11 + 21 + 3 + 32
    draws = sampler.sample(10, 67_000, np.random.default_rng(0))
    counts = {}
    for ep, start in draws:
        assert 0 <= start <= store.lengths[ep] - 10
        counts[(ep, start)] = counts.get((ep, start), 0) + 1
    assert len(counts) == 67  # every window is reachable
    freq = np.array(list(counts.values())) / len(draws)
    np.testing.assert_allclose(freq, 1 / 67, rtol=0.15)


def test_window_sampler_numpy_and_torch_generators_are_seeded(folder):
    """The same seed gives the same windows (numpy and torch generators alike); another seed other windows."""
    sampler = WindowSampler(EpisodeStore(folder).lengths)
    a = sampler.sample(10, 20, torch.Generator().manual_seed(3))
    assert a == sampler.sample(10, 20, torch.Generator().manual_seed(3))
    assert a != sampler.sample(10, 20, torch.Generator().manual_seed(4))
    b = sampler.sample(10, 20, np.random.default_rng(3))
    assert b == sampler.sample(10, 20, np.random.default_rng(3))
    with pytest.raises(TypeError, match="numpy Generator or a torch.Generator"):
        sampler.sample(10, 2, 3)


def test_window_sampler_skips_short_and_dropped_and_explains_when_none_fit(folder):
    """Short episodes are never drawn, dropped ones neither; with none left the error gives the longest."""
    sampler = WindowSampler(EpisodeStore(folder).lengths)
    assert {ep for ep, _ in sampler.sample(25, 500, np.random.default_rng(0))} == {1, 3}
    sampler.drop(3)
    assert {ep for ep, _ in sampler.sample(25, 200, np.random.default_rng(0))} == {1}
    with pytest.raises(
        ValueError,
        match=r"no episode has the 31 frames a window needs \(longest of 3 usable "
        r"episode\(s\): 30 frames\)",
    ):
        sampler.sample(31, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"window=0"):
        sampler.count(0)


def test_forged_header_length_is_refused(tmp_path):
    """A header claiming more frames than the file holds is refused by the header check (no MemoryError, no
    sampling weight taken from it), with or without skip_bad, naming the file."""
    import io

    data = fake_episode(9)
    path = write_raw(tmp_path / "ep_00000.npz", **data)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        forged, {"descr": "|u1", "fortran_order": False, "shape": (10_000_000, 64, 64, 3)}
    )
    members["image.npy"] = forged.getvalue() + data["image"].tobytes()  # real data: 10 frames
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(EpisodeError, match=r"ep_00000\.npz: 'image' header claims shape \(10000000, 64, 64, 3\)"):
        episode_length(path)
    save_episode(tmp_path / "ep_00001.npz", fake_episode(5, seed=1))
    with pytest.warns(UserWarning, match=r"ep_00000\.npz: 'image' header claims"):
        store = EpisodeStore(tmp_path, skip_bad=True)
    assert [p.name for p in store.paths] == ["ep_00001.npz"] and store.lengths == [6]


def test_store_load_reports_value_errors_like_header_errors(tmp_path, folder):
    """A file whose header is fine but whose values are not (NaN reward, non-one-hot action) passes the
    header check; loading it raises naming the file, or with skip_bad is reported in .bad and returns None."""
    data = fake_episode(14, seed=7)
    data["reward"][3] = np.nan
    write_raw(folder / "ep_00004.npz", **data)
    data = fake_episode(14, seed=8)
    data["action"][5] = 0.5
    write_raw(folder / "ep_00005.npz", **data)
    store = EpisodeStore(folder)
    assert len(store) == 6  # headers are fine
    with pytest.raises(EpisodeError, match=r"ep_00004\.npz: 'reward' has non-finite values"):
        store.load(4)
    lenient = EpisodeStore(folder, skip_bad=True)
    with pytest.warns(
        UserWarning,
        match=r"skipped 1 bad episode file\(s\): ep_00005\.npz: 'action' row 5 is "
        r"not one-hot",
    ):
        assert lenient.load(5) is None
    assert [(p.name, "not one-hot" in why) for p, why in lenient.bad] == [("ep_00005.npz", True)]
    assert lenient.load(0) is not None


def test_file_digest_tracks_content(folder):
    """file_digest is the SHA-256 of the bytes: equal for equal content, different after a change."""
    import hashlib

    p = folder / "ep_00000.npz"
    assert file_digest(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    before = file_digest(p)
    save_episode(p, fake_episode(19, seed=99))
    assert file_digest(p) != before


def test_step_batches_split_among_processes_without_repeats():
    """A step's global batch depends only on (seed, step): the shares of 2 or 4 processes, put together, are the
    1-process batch; no window repeats within a step; with fewer windows than the batch, all appear first."""
    sampler = WindowSampler([30, 50, 12, 41], names=list("abcd"))
    whole, ids = sampler.step_batch(8, 16, seed=3, step=5)
    assert ids == range(16) and len(set(whole)) == 16
    assert all(s + 8 <= sampler.lengths[e] for e, s in whole)
    for world in (2, 4):
        shares = [sampler.step_batch(8, 16, seed=3, step=5, rank=r, world_size=world) for r in range(world)]
        assert [p for pairs, _ in shares for p in pairs] == whole
        assert [i for _, share in shares for i in share] == list(range(16))
    assert sampler.step_batch(8, 16, seed=3, step=6)[0] != whole
    assert sampler.step_batch(8, 16, seed=4, step=5)[0] != whole
    small = WindowSampler([10, 11])  # 3 + 4 windows of 8 frames
    picks, _ = small.step_batch(8, 10, seed=0, step=0)
    assert set(picks[:7]) == {(0, s) for s in range(3)} | {(1, s) for s in range(4)} and len(set(picks)) == 7
    with pytest.raises(ValueError, match=r"batch=10: the global batch must be a multiple of the 4 process"):
        sampler.step_batch(8, 10, seed=0, step=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"rank=2: expected 0..1"):
        sampler.step_batch(8, 10, seed=0, step=0, rank=2, world_size=2)


def test_derived_seeds_are_stable_and_distinct():
    """derived_seed gives the same 63-bit seed for the same keys and different ones for different keys."""
    seeds = {derived_seed(0, step, i) for step in range(20) for i in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert derived_seed(7, 1) == derived_seed(7, 1) != derived_seed(7, 1, 0)
    with pytest.raises(ValueError, match="integers >= 0"):
        derived_seed(-1)
