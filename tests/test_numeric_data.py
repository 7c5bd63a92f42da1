"""Statistics of the numeric latent model and the mixing functions (crossmodal_mislaignment main_numeric.py,
invertible_network_utils.py)."""

import numpy as np
import pytest
import torch

from mmrep.bias import MisalignmentBias
from mmrep.core.errors import ConfigError
from mmrep.data.mixing import condition_threshold, invert_mlp, invertible_mlp
from mmrep.data.numeric import NumericDataModule
from mmrep.data.seeding import torch_generator


def make(**kw):
    kw.setdefault("bias", MisalignmentBias(theta=list(range(8)), beta=[0, 1]))
    kw.setdefault("n_cond_samples", 2000)
    return NumericDataModule(**kw)


def test_modalities_and_encoding_size():
    dm = make()
    assert {m: s.shape for m, s in dm.spec.modalities.items()} == {"x": (15,), "t": (13,)}
    assert dm.spec.encoding_size == 6 and dm.spec.task == "none"
    assert list(dm.spec.latent_names) == dm.latent_names
    assert dm.latent_names[:2] == ["s_0", "s_1"] and dm.latent_names[-2:] == ["m_x", "m_t"]


def test_independent_marginals_and_perturbation_law():
    dm = make()
    lat = dm.latent_model.sample(200_000, torch.Generator().manual_seed(0))
    s, st = lat["s"].double(), lat["s_tilde"].double()
    # s, m ~ N(0, I): mean 0, unit variance, uncorrelated (5 s.e. ≈ 0.011)
    for block in (s, lat["m_x"].double(), lat["m_t"].double()):
        assert block.mean(0).abs().max() < 0.012
        assert (block.var(0) - 1).abs().max() < 0.02
    cov = torch.cov(torch.cat([s, lat["m_x"], lat["m_t"]], 1).T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 0.02
    # only β = {0,1} is corrupted, each coordinate with probability 0.75 by N(0,1) noise
    changed = (st != s).double().mean(0)
    assert changed[:2].sub(0.75).abs().max() < 0.006
    assert changed[2:].abs().max() == 0
    diff = (st - s)[:, 0][(st - s)[:, 0] != 0]
    assert diff.var().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("scale", [False, True])
def test_margin_std_scales_s_and_with_the_originals_option_also_m(scale):
    dm = make(margin_std=2.0, scale_modality_latents=scale)
    lat = dm.latent_model.sample(100_000, torch.Generator().manual_seed(1))
    assert lat["s"].std(0).sub(2.0).abs().max() < 0.03
    for m in ("m_x", "m_t"):
        assert lat[m].std(0).sub(2.0 if scale else 1.0).abs().max() < 0.03


def test_dependent_regime_covariance():
    dm = make(dependent=True)
    chol = dm.latent_model.chol["s"].double()
    target = chol @ chol.T
    lat = dm.latent_model.sample(200_000, torch.Generator().manual_seed(1))
    sample_cov = torch.cov(lat["s"].double().T)
    rel = (sample_cov - target).abs().max() / target.abs().max()
    assert rel < 0.03
    # Wishart(df=10, I) variances average about 10 (main_numeric.py), and Σ_a is a separate draw by default
    assert 4 < torch.diag(target).mean() < 20
    assert not torch.allclose(dm.latent_model.chol["a"], dm.latent_model.chol["s"])
    shared = make(dependent=True, share_covariances=True).latent_model
    assert torch.equal(shared.chol["a"], shared.chol["s"]) and torch.equal(shared.chol["m_t"], shared.chol["m_x"])


def test_views_use_selected_perturbed_latents_in_order():
    dm = make()
    gen = torch.Generator().manual_seed(2)
    batch = dm.generate(64, gen)
    lat = batch["latents"]
    z_t = invert_mlp(dm.mixing["t"].double(), batch["t"].double())
    torch.testing.assert_close(z_t[:, :8], lat["s_tilde"][:, :8].double(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z_t[:, 8:], lat["m_t"].double(), atol=1e-4, rtol=1e-4)
    z_x = invert_mlp(dm.mixing["x"].double(), batch["x"].double())
    torch.testing.assert_close(z_x, torch.cat([lat["s"], lat["m_x"]], 1).double(), atol=1e-4, rtol=1e-4)
    assert set(batch["neg"]) == {"x", "t"} and batch["neg"]["x"].shape == (64, 15)


@pytest.mark.parametrize("n", [6, 15])
def test_mixing_is_invertible_and_well_conditioned(n):
    net = invertible_mlp(n, 3, seed=5, n_cond_samples=5000)
    x = torch.randn(500, n, dtype=torch.float64)
    torch.testing.assert_close(invert_mlp(net.double(), net.double()(x)), x)
    threshold = condition_threshold(np.random.default_rng(5), n, 5000)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            w = layer.weight.double().numpy()
            assert np.linalg.cond(w) <= threshold * (1 + 1e-5)
            np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)
    assert all(not p.requires_grad for p in net.parameters())


def test_condition_threshold_is_low_quantile():
    # utils/invertible_network_utils.py orientation: ≈ 8.2 at n=15, 5.2 at n=10, 2.7 at n=6 (seed dependent)
    rng = np.random.default_rng(0)
    assert 6.5 < condition_threshold(rng, 15) < 10
    assert 2.2 < condition_threshold(rng, 6) < 3.3


def test_generation_is_seeded():
    a, b = make(seed=3), make(seed=3)
    ba = a.generate(32, torch_generator(3, "train", 7))
    bb = b.generate(32, torch_generator(3, "train", 7))
    torch.testing.assert_close(ba["x"], bb["x"])
    bc = a.generate(32, torch_generator(3, "train", 8))
    assert not torch.allclose(ba["x"], bc["x"])
    fit, ev = a.heldout("probe_fit", 100), a.heldout("probe_eval", 100)
    assert not torch.allclose(fit[0]["x"], ev[0]["x"])
    torch.testing.assert_close(fit[0]["x"], b.heldout("probe_fit", 100)[0]["x"])


def test_train_stream_yields_epoch_of_batches():
    dm = make(batch_size=16, steps_per_epoch=3)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and batches[0]["x"].shape == (16, 15) and "latents" not in batches[0]
    assert not torch.allclose(batches[0]["x"], batches[1]["x"])


@pytest.mark.parametrize("key, value", [("batch_size", -4), ("n_semantics", 0), ("steps_per_epoch", 0), ("n_val", -1)])
def test_negative_sizes_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^dataset.{key}"):
        make(**{key: value})


def test_probe_targets():
    dm = make()
    lat = dm.generate(10, torch.Generator().manual_seed(0))["latents"]
    t = dm.probe_targets(lat)
    assert t["s_inv"].shape == (10, 6) and t["m_x"].shape == (10, 5)
    torch.testing.assert_close(t["tilde_s_1"][:, 0], lat["s_tilde"][:, 1])
    assert "tilde_s_2" not in t


def test_training_stream_follows_the_trainer_device():
    dm = make(device="auto")
    assert dm.stream_device().type == "cpu"  # no trainer yet
    dm.trainer = type("T", (), {"strategy": type("S", (), {"root_device": torch.device("cpu")})()})()
    assert dm.stream_device().type == "cpu"
    with pytest.raises(ConfigError, match=r"^dataset.device: cpu or auto"):
        make(device="cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_stream_is_generated_on_the_gpu_reproducibly():
    dm = make(device="auto")
    dm.trainer = type(
        "T",
        (),
        {"strategy": type("S", (), {"root_device": torch.device("cuda")})(), "global_step": 0, "global_rank": 0},
    )()
    first, again = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert first["x"].is_cuda and first["neg"]["t"].is_cuda
    torch.testing.assert_close(first["x"], again["x"])
