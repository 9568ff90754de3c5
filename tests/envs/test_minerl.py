"""MineRL adapter against a fake MineRL env: action dicts, resized frames, Box mode, episode ends, the mapping rule."""

import gymnasium
import numpy as np
import pytest
from fake_minerl import NOOP, FakeMineRL, pov_colour
from gymnasium.utils.env_checker import check_env

import envs.minerl as minerl_module
from envs.minerl import (
    ACTION_NAMES,
    MineRLConfig,
    MineRLEnv,
    MineRLNotInstalledError,
    box_actions,
    compact_actions,
    minerl_action,
)


def make(**kwargs):
    fake = FakeMineRL(**{k: kwargs.pop(k) for k in ("pov_shape", "steps", "truncate") if k in kwargs})
    return MineRLEnv(make_env=lambda env_id: fake, **kwargs), fake


def expected(**changes):
    out = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in NOOP.items()}
    out.update(changes)
    return out


def assert_action_equal(got, want):
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    assert isinstance(got["place"], str)  # enum values stay plain strings, as MineRL expects


def test_discrete_actions_become_minerl_dicts():
    """forward/left/right/jump send MineRL's noop with forward=1, camera yaw -20/+20, jump=1; the fake's state
    (shown in the next frame) follows."""
    env, fake = make()
    obs, info = env.reset(seed=3)
    assert env.action_space == gymnasium.spaces.Discrete(4) and ACTION_NAMES == ("forward", "left", "right", "jump")
    assert fake.seeds == [3] and obs.shape == (64, 64, 3) and info["minerl_obs"]["compass"]["angle"] == 12.5
    want = {
        0: expected(forward=1),
        1: expected(camera=np.array([0.0, -20.0], np.float32)),
        2: expected(camera=np.array([0.0, 20.0], np.float32)),
        3: expected(jump=1),
    }
    yaw = 0.0
    for t, a in enumerate([0, 1, 1, 2, 3], start=1):
        obs, reward, terminated, truncated, _ = env.step(a)
        assert_action_equal(fake.actions[-1], want[a])
        yaw += {1: -20.0, 2: 20.0}.get(a, 0.0)
        assert np.all(obs == pov_colour(t, yaw, int(a == 0), int(a == 3)))
        assert reward == float(a == 0) and not terminated and not truncated
    assert np.array_equal(env.render(), obs)


def test_frames_are_resized_to_the_chosen_size():
    """A 96x128 pov comes out as size x size uint8 with the fake's colour (64 by default, 32 when asked)."""
    for size in (64, 32):
        env, _ = make(size=size)
        obs, _ = env.reset()
        assert obs.shape == (size, size, 3) and obs.dtype == np.uint8 and env.observation_space.shape == obs.shape
        assert np.all(obs == pov_colour(0, 0.0, 0, 0))


def test_box_actions_set_forward_jump_and_a_clipped_camera():
    """Box mode: [forward, jump, pitch, yaw] with keys pressed above 0.5 and the camera clipped to the limit."""
    env, fake = make(action_mode="box", camera_limit=90.0)
    env.reset()
    assert env.action_space.shape == (4,) and env.action_space.high.tolist() == [1, 1, 90, 90]
    env.step(np.array([0.9, 0.2, 5.0, -400.0], np.float32))
    assert_action_equal(fake.actions[-1], expected(forward=1, camera=np.array([5.0, -90.0], np.float32)))
    env.step(np.array([0.1, 0.7, 0.0, 12.5], np.float32))
    assert_action_equal(fake.actions[-1], expected(jump=1, camera=np.array([0.0, 12.5], np.float32)))
    with pytest.raises(ValueError, match="expected 4 finite numbers"):
        env.step(np.array([0, 0, np.nan, 0], np.float32))


def test_done_is_terminated_or_truncated_and_needs_a_reset():
    """MineRL's done is `terminated`, or `truncated` when its time limit caused it; stepping on raises."""
    for truncate in (False, True):
        env, _ = make(steps=2, truncate=truncate)
        env.reset()
        assert env.step(0)[2:4] == (False, False)
        assert env.step(0)[2:4] == (not truncate, truncate)
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(0)


def test_bad_options_and_actions_are_refused():
    """Unknown options, a bad mode, an out-of-range action: errors naming the value."""
    with pytest.raises(TypeError, match="unknown options"):
        make(colour=True)
    with pytest.raises(ValueError, match="action_mode='joystick'"):
        MineRLConfig(action_mode="joystick")
    env, _ = make()
    env.reset()
    with pytest.raises(ValueError, match=r"action=4: expected an integer in \[0, 4\)"):
        env.step(4)


# the Box keeps MineRL's units (degrees), the layout the converters store as action_box; the checker suggests [-1, 1]
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
def test_gymnasium_env_checker_passes():
    """Gymnasium's check_env accepts the adapter in both action modes."""
    for mode in ("discrete", "box"):
        env, fake = make(action_mode=mode)
        check_env(env, skip_render_check=True)
        env.close()
        assert fake.closed


def test_without_minerl_the_error_says_what_installing_takes(monkeypatch):
    """No minerl package: MineRLEnv raises an ImportError naming Java 8, network access and the extra."""
    monkeypatch.setattr(minerl_module, "minerl", None)
    with pytest.raises(MineRLNotInstalledError) as e:
        MineRLEnv()
    msg = str(e.value)
    assert isinstance(e.value, ImportError) and "MineRLNavigate-v0" in msg and "needs the minerl package" in msg
    assert "Java 8" in msg and "network access" in msg and "pip install longdream[minerl]" in msg


def test_compact_rule_first_match_wins():
    """Turn beyond the threshold, then jump, then forward, else the default (yaw sign: negative is left)."""
    forward = np.array([1, 0, 0, 1, 0, 0, 1, 1, 0])
    jump = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0])
    yaw = np.array([0.0, -10.0, 0.0, 0.0, 7.0, 2.0, -5.0, 5.0, -4.9])
    assert compact_actions(forward, jump, yaw, turn_threshold=5.0).tolist() == [0, 1, 3, 3, 2, 0, 1, 2, 0]
    assert compact_actions(forward, jump, yaw, 5.0, default="jump").tolist() == [0, 1, 3, 3, 2, 3, 1, 2, 3]
    assert compact_actions(forward, jump, yaw, turn_threshold=20.0).tolist() == [0, 0, 3, 3, 0, 0, 0, 3, 0]
    with pytest.raises(ValueError, match="default='back'"):
        compact_actions(forward, jump, yaw, default="back")


def test_compact_actions_round_trip_through_minerl_dicts():
    """Each compact action's MineRL dict maps back to it under the converters' rule."""
    for a in range(len(ACTION_NAMES)):
        d = minerl_action(a, NOOP, turn_degrees=20.0)
        assert compact_actions([d["forward"]], [d["jump"]], [d["camera"][1]]).tolist() == [a]
        box = box_actions([d["forward"]], [d["jump"]], [d["camera"]])
        assert box.dtype == np.float32 and box.shape == (1, 4)
