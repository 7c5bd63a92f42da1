import itertools
from math import comb

import pytest

from mmrep.bias import MisalignmentBias, powerset_index, powerset_subset
from mmrep.core.errors import ConfigError


def test_powerset_table_matches_spec_prefix_indices():
    # crossmodal_mislaignment main_numeric.py: idx([k]) = Σ_{r=1}^{k-1} C(10, r); the table lists the sweep values
    spec = {0: 1, 10: 2, 55: 3, 175: 4, 385: 5, 637: 6, 847: 7, 967: 8, 1012: 9, 1022: 10}
    for index, k in spec.items():
        assert powerset_subset(index, 10) == tuple(range(k))
        assert index == sum(comb(10, r) for r in range(1, k))


def test_powerset_order_and_roundtrip():
    n = 5
    expected = [c for r in range(1, n + 1) for c in itertools.combinations(range(n), r)]
    assert [powerset_subset(i, n) for i in range(2**n - 1)] == expected
    assert all(powerset_index(s, n) == i for i, s in enumerate(expected))


def test_resolve_sets():
    b = MisalignmentBias(theta=967, beta=10).resolve(10)  # paper Table 5: θ=[8], ρ=[2]
    assert b.selected == tuple(range(8))
    assert b.perturbed_selected == (0, 1)
    assert b.invariant == (2, 3, 4, 5, 6, 7)
    assert b.omitted == (8, 9)
    assert MisalignmentBias(theta=None, beta=-1).resolve(10).invariant == tuple(range(10))
    assert MisalignmentBias(theta=[7, 2, 5]).resolve(10).selected == (2, 5, 7)


@pytest.mark.parametrize(
    "kwargs, key, fragment",
    [
        (dict(theta=[]), "bias.theta", "empty"),
        (dict(theta=[0, 10]), "bias.theta", "out of range"),
        (dict(theta=1023), "bias.theta", "out of range"),
        (dict(theta=-1), "bias.theta", "out of range"),
        (dict(theta=[1, 1]), "bias.theta", "repeated"),
        (dict(theta=[0, 1], beta=[0, 1]), "bias.beta", "nothing is left"),
        (dict(theta=[0, 1, 2], beta=[5]), "bias.beta", "not selected"),
        (dict(beta=[-3]), "bias.beta", "out of range"),
        (dict(change_prob=1.5), "bias.change_prob", "[0, 1]"),
        (dict(theta="all"), "bias.theta", "string"),
    ],
)
def test_bad_bias_names_key(kwargs, key, fragment):
    with pytest.raises(ConfigError) as err:
        MisalignmentBias(**kwargs).resolve(10)
    assert str(err.value).startswith(key)
    assert fragment in str(err.value)


def test_paper_setting_ids_need_a_dataset_that_has_them():
    from mmrep.data.base import reject_bias

    with pytest.raises(ConfigError, match="^bias.setting: this dataset has no numbered paper settings"):
        MisalignmentBias(setting="selection_1").resolve(10)
    assert not MisalignmentBias(name="none", setting="selection_1").is_identity
    with pytest.raises(ConfigError, match="^bias: dataset=rus has no latent selection/perturbation"):
        reject_bias(MisalignmentBias(name="none", setting="selection_1"), "rus")
    reject_bias(MisalignmentBias(name="none"), "rus")  # bias=none is accepted
