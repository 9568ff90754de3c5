"""The real env's reference for action-following: held-out episodes replayed exactly, then continued."""

import json
import shutil

import numpy as np
import pytest
import torch

from benchmarks.action_following import Replayer
from envs.collect import episode_origin
from envs.episodes import EpisodeStore


def _load(path):
    with np.load(path, allow_pickle=False) as d:
        return torch.from_numpy(d["image"]), torch.from_numpy(d["action"].argmax(-1))


def test_replaying_an_episode_reproduces_its_frames_and_other_actions_change_them(real_episodes):
    """Known answer: continuing with the episode's own actions gives back its stored frames exactly; with the
    left/right mirror image of turning actions the frames differ."""
    paths = EpisodeStore(real_episodes).paths
    frames, actions = zip(*(_load(p) for p in paths))
    rep = Replayer(paths, list(frames), list(actions))
    try:
        upto, tf = 10, 8
        same = rep.continue_with(1, upto, actions[1][upto : upto + tf])
        assert np.array_equal(same, frames[1][upto : upto + tf].numpy())
        left = rep.continue_with(1, upto, torch.full((tf,), 2))
        right = rep.continue_with(1, upto, torch.full((tf,), 3))
        assert not np.array_equal(left, right) and not np.array_equal(left[0], frames[1][upto - 1].numpy())
    finally:
        rep.close()


def test_episodes_that_cannot_be_replayed_are_named(real_episodes, tmp_path):
    env, seed, fast = episode_origin(EpisodeStore(real_episodes).paths[2])
    manifest = json.loads((real_episodes / "manifest.json").read_text())
    assert (env, seed, fast) == (manifest["env"], manifest["seed"] + 2, True)
    bad = tmp_path / "eps"
    shutil.copytree(real_episodes, bad)
    path = EpisodeStore(bad).paths[0]
    frames, actions = _load(path)
    frames[4] = 255 - frames[4]  # a stored frame the env cannot reproduce
    with pytest.raises(
        ValueError, match=rf"{path.name}: replaying its actions from seed \d+ .* does not reproduce frame 4"
    ):
        Replayer([path], [frames], [actions]).continue_with(0, 5, actions[5:7])
    m = json.loads((bad / "manifest.json").read_text())
    del m["seed"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="cannot be replayed in the real env: expected an envs.collect episode"):
        episode_origin(path)
