"""The vectorised TargetSphere activation check equals dm_control's stock loop."""

from types import SimpleNamespace

import numpy as np
import pytest
from dm_control.locomotion.props.target_sphere import TargetSphere

from envs.activation import FastTargetSphere, fast_hit, stock_hit


class FakeContacts:
    """Stands in for ``physics.data.contact``: iterable of structs (stock loop) and column arrays (fast)."""

    def __init__(self, geom1, geom2):
        self.geom1 = np.asarray(geom1, dtype=np.int32)
        self.geom2 = np.asarray(geom2, dtype=np.int32)

    def __len__(self):
        return len(self.geom1)

    def __iter__(self):
        return (SimpleNamespace(geom1=int(a), geom2=int(b)) for a, b in zip(self.geom1, self.geom2))


class FakePhysics:
    """Just enough physics for ``_update_activation``: contacts and a bindable material alpha."""

    def __init__(self, contacts):
        self.data = SimpleNamespace(contact=contacts)
        self.rgba = np.ones(4)

    def bind(self, element):
        return SimpleNamespace(rgba=self.rgba)


def _prime(t, geom_id, specific, activated):
    t._geom_id = geom_id
    t._specific_collision_geom_ids = specific
    t._activated = activated
    return t


@pytest.mark.parametrize("specific", [None, [], [3], [3, 7], (2, 5, 9)], ids=["none", "empty", "1", "2", "3"])
def test_fast_update_activation_matches_stock_on_same_contacts(specific):
    """On 400 random contact sets, FastTargetSphere activates (and hides) exactly when the stock loop does."""
    rng = np.random.default_rng(0)
    stock_target, fast_target = TargetSphere(radius=0.6), FastTargetSphere(radius=0.6)
    outcomes = set()
    for _ in range(400):
        n = int(rng.integers(0, 7))
        contacts = FakeContacts(rng.integers(0, 11, n), rng.integers(0, 11, n))
        activated = bool(rng.random() < 0.1)
        stock_t = _prime(stock_target, 7, specific, activated)
        fast_t = _prime(fast_target, 7, specific, activated)
        stock_p, fast_p = FakePhysics(contacts), FakePhysics(contacts)
        TargetSphere._update_activation(stock_t, stock_p)  # dm_control's own loop
        fast_t._update_activation(fast_p)
        assert fast_t.activated == stock_t.activated
        np.testing.assert_array_equal(fast_p.rgba, stock_p.rgba)
        g1, g2 = contacts.geom1, contacts.geom2
        assert fast_hit(g1, g2, 7, specific) == stock_hit(g1, g2, 7, specific)
        outcomes.add((activated, stock_t.activated))
    assert (False, True) in outcomes and (False, False) in outcomes  # both decisions were exercised


def test_fast_hit_edge_cases():
    """No contacts never activates; the geom on either side of a contact does."""
    empty = np.zeros(0, np.int32)
    assert not fast_hit(empty, empty, 4)
    assert fast_hit([1, 4], [2, 0], 4) and fast_hit([1, 0], [2, 4], 4)
    assert not fast_hit([1, 4], [2, 0], 4, specific_ids=[9])  # touching, but not by a listed geom
    # the listed geom must be in the same contact as the target, not in another one
    assert not fast_hit([9, 4], [2, 0], 4, specific_ids=[2]) and not stock_hit([9, 4], [2, 0], 4, [2])
    assert fast_hit([9, 4], [2, 2], 4, specific_ids=[2]) and stock_hit([9, 4], [2, 2], 4, [2])
