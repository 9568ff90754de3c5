"""worldmodel.model loading: non-finite weights and files that are not world-model checkpoints are refused clearly."""

import copy
import re

import pytest
import torch

import worldmodel
from worldmodel.model import NonFiniteWeightsError, check_finite_weights, load
from worldmodel.utils import torch_load


def _poisoned(src, dst, entry: str, names: list[str], value: float):
    """Copy the checkpoint `src` to `dst` with `value` written into element 0 of the tensors `names` of `entry`."""
    ckpt = torch_load(src)
    for name in names:
        t = ckpt[entry][name].clone()
        t.view(-1)[0] = value
        ckpt[entry][name] = t
    torch.save(ckpt, dst)
    return dst


def _float_names(tiny_checkpoint, entry="ema"):
    return [k for k, v in torch_load(tiny_checkpoint)[entry].items() if v.is_floating_point()]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_refuses_non_finite_ema_weights(tiny_checkpoint, tmp_path, value):
    """A NaN/inf in the EMA weights (what load uses) is refused naming the file, the entry and the tensor."""
    names = _float_names(tiny_checkpoint)
    bad = names[len(names) // 2]
    path = _poisoned(tiny_checkpoint, tmp_path / "bad.pt", "ema", [bad], value)
    with pytest.raises(NonFiniteWeightsError, match=re.escape(f"{path} ('ema' weights): weight tensor {bad!r}")):
        load(path, device="cpu")
    with pytest.raises(NonFiniteWeightsError, match="1 NaN/inf value"):
        worldmodel.load(path, device="cpu")


def test_load_names_the_first_bad_tensor_of_the_weights_it_uses(tiny_checkpoint, tmp_path):
    """Two poisoned tensors: the first in state-dict order is named; raw weights (ema=False) are checked too, and
    a poisoned raw entry does not block loading the (finite) EMA weights."""
    names = _float_names(tiny_checkpoint, "model")
    first, later = names[3], names[-1]
    path = _poisoned(tiny_checkpoint, tmp_path / "bad.pt", "model", [later, first], float("nan"))
    with pytest.raises(NonFiniteWeightsError, match=re.escape(f"('model' weights): weight tensor {first!r}")):
        load(path, device="cpu", ema=False)
    assert load(path, device="cpu").training is False


def test_check_finite_weights_on_a_model_instance(tiny_model):
    """The check the dream env runs on a WorldModel it is handed: a clean model passes, a poisoned copy fails."""
    check_finite_weights(tiny_model, "<WorldModel instance>")
    bad = copy.deepcopy(tiny_model)
    with torch.no_grad():
        bad.reward_head[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"<WorldModel instance>: weight tensor 'reward_head\.0\.weight'"):
        check_finite_weights(bad, "<WorldModel instance>")
    check_finite_weights(tiny_model.state_dict(), "state")  # a state_dict works as well


def test_load_on_an_autoencoder_checkpoint_says_what_it_is(tiny_checkpoint):
    """worldmodel.load on RUN_DIR/autoencoder.pt names the file, says it is the stage-1 autoencoder and what was
    expected (no KeyError)."""
    ae = tiny_checkpoint.parent / "autoencoder.pt"
    assert ae.is_file()
    with pytest.raises(ValueError, match=re.escape(str(ae)) + r".*autoencoder checkpoint.*RUN_DIR/checkpoint\.pt"):
        worldmodel.load(ae, device="cpu")


def test_load_on_other_files_says_what_was_expected(tiny_checkpoint, tmp_path):
    """A plain state_dict, a checkpoint without config, a config without the model part, or a bare tensor are
    each refused with the file name and what a world-model checkpoint holds."""
    ckpt = torch_load(tiny_checkpoint)
    cases = {
        "state_dict.pt": (ckpt["ema"], r"plain state_dict \(\d+ tensors, no config\)"),
        "no_config.pt": ({"model": ckpt["model"]}, r"missing \['config'\]"),
        "ae_config.pt": (
            {"config": {"latent_channels": 4}, "model": ckpt["model"]},
            r"no 'model' entry.*autoencoder config",
        ),
        "tensor.pt": (torch.zeros(3), "holds a Tensor"),
    }
    wrong = dict(ckpt, ema={k: v for k, v in list(ckpt["ema"].items())[1:]})  # a tensor missing
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "wrong.pt")) + r".*'ema' weights do not fit"):
        load(tmp_path / "wrong.pt", device="cpu")
    for name, (obj, why) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name)) + r".*" + why + r".*expected a world"):
            load(tmp_path / name, device="cpu")


def test_package_load_forwards_sampler_overrides(tiny_checkpoint):
    """worldmodel.load passes sampling_steps / context_noise through to worldmodel.model.load."""
    m = worldmodel.load(tiny_checkpoint, device="cpu", sampling_steps=3, context_noise=0.05)
    assert m.config.diffusion.sampling_steps == 3 and m.config.diffusion.context_noise == 0.05
