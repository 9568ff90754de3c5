"""Episode files: validation, named errors, the store's split, and the window dataset (no simulator)."""
import warnings
import zipfile

import numpy as np
import pytest
import torch

from envs.episodes import (
    OFFICIAL_KEYS,
    EpisodeError,
    EpisodeStore,
    WindowDataset,
    episode_length,
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
    path = write_raw(tmp_path / "20220101T000000-r1-0010.npz", **data,
                     terminal=np.zeros(11, bool), reset=np.eye(1, 11, dtype=bool)[0])
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
        (lambda d: d.update(image=d["image"][..., 0]),
         r"'image' has shape \(11, 64, 64\), expected \(T\+1, H, W, 3\)"),
        (lambda d: d.update(image=d["image"].astype(np.float32)),
         r"'image' has dtype float32, expected uint8"),
        (lambda d: d.pop("action"), r"missing key\(s\) \['action'\]"),
        (lambda d: d.update(reward=d["reward"][:-1]), r"'reward' has shape \(10,\), expected \(11,\)"),
        (lambda d: d.update(agent_pos=d["agent_pos"][:, :1]),
         r"'agent_pos' has shape \(11, 1\), expected \(11, 2\)"),
        (lambda d: d.update(targets_vec=d["targets_vec"][:, :2]), r"'targets_vec' has 2 targets but another"),
        (lambda d: d["action"].__setitem__((3, slice(None)), 0), r"'action' row 3 is not one-hot"),
        (lambda d: d["agent_dir"].__setitem__((2, 0), np.nan), r"'agent_dir' has non-finite values"),
    ],
    ids=["image-shape", "image-dtype", "missing-key", "time-axis", "trailing-shape", "n-targets", "one-hot",
         "nan"],
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


def test_window_dataset_fixed_offsets(folder):
    """Fixed offsets enumerate every stride-aligned window; items equal the file's arrays sliced."""
    store = EpisodeStore(folder)
    ds = WindowDataset(store, window=10, random_offset=False)
    # lengths 20, 30, 12, 41 -> starts {0,10}, {0,10,20}, {0}, {0,10,20,30}
    assert ds.index == [(0, 0), (0, 10), (1, 0), (1, 10), (1, 20), (2, 0), (3, 0), (3, 10), (3, 20), (3, 30)]
    item = ds[4]
    ep = load_episode(store.paths[1])
    assert item["episode"].item() == 1 and item["start"].item() == 20
    assert item["frames"].dtype == torch.uint8 and tuple(item["frames"].shape) == (10, 64, 64, 3)
    np.testing.assert_array_equal(item["frames"].numpy(), ep["image"][20:30])
    np.testing.assert_array_equal(item["actions"].numpy(), ep["action"][20:30].argmax(1))
    np.testing.assert_array_equal(item["rewards"].numpy(), ep["reward"][20:30])
    np.testing.assert_allclose(item["positions"].numpy(), ep["agent_pos"][20:30].astype(np.float32))
    assert item["actions"].dtype == torch.int64 and item["rewards"].dtype == torch.float32
    assert item["positions"].dtype == torch.float32
    first = ds[0]
    assert first["actions"][0].item() == 0  # the all-zero action[0] maps to noop
    strided = WindowDataset(store, window=10, random_offset=False, stride=5)
    assert len(strided) == 3 + 5 + 1 + 7


def test_window_dataset_random_offsets_are_seeded_and_in_range(folder):
    """Random offsets stay inside the episode, repeat with the same seed, and differ with another seed."""
    store = EpisodeStore(folder)

    def starts(seed):
        ds = WindowDataset(store, window=10, random_offset=True, seed=seed)
        out = []
        for _ in range(5):
            for i in range(len(ds)):
                item = ds[i]
                ep, start = item["episode"].item(), item["start"].item()
                assert ep == ds.index[i][0] and 0 <= start <= store.lengths[ep] - 10
                out.append(start)
        return out

    assert starts(0) == starts(0)
    assert starts(0) != starts(1)


def test_window_dataset_skips_short_and_explains_when_none_fit(folder):
    """Episodes shorter than the window are skipped; if none fits the error gives needed and longest."""
    ds = WindowDataset(EpisodeStore(folder), window=25, random_offset=False)
    assert sorted({ep for ep, _ in ds.index}) == [1, 3]
    with pytest.raises(ValueError, match=r"need 50 frames, the longest of the 4 episode\(s\) has 41"):
        WindowDataset(EpisodeStore(folder), window=50)


def test_window_dataset_positions_zero_without_agent_pos(tmp_path):
    """Files without agent_pos give zero positions; a DataLoader batches the items."""
    data = {k: v for k, v in fake_episode(12).items() if k in ("image", "action", "reward")}
    save_episode(tmp_path / "ep_00000.npz", data)
    ds = WindowDataset([tmp_path / "ep_00000.npz"], window=4, random_offset=False)
    assert torch.count_nonzero(ds[1]["positions"]) == 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert tuple(batch["frames"].shape) == (3, 4, 64, 64, 3) and batch["start"].tolist() == [0, 4, 8]


def test_window_dataset_cache_is_bounded(folder):
    """The decoded-episode cache keeps at most max_cached_episodes episodes."""
    ds = WindowDataset(EpisodeStore(folder), window=5, random_offset=False, max_cached_episodes=2)
    for i in range(len(ds)):
        ds[i]
        assert len(ds._cache) <= 2
