"""The paper's qualitative numeric result from the default run (minutes): marked slow, runs in CI."""

import pandas as pd
import pytest


@pytest.mark.slow
def test_default_run_identifies_exactly_the_invariant_latents(cli, tmp_path):
    out = tmp_path / "run"
    res = cli([f"hydra.run.dir={out}", "callbacks.rich_progress_bar=null"])
    assert res.returncode == 0, res.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    r2 = df[(df.metric == "r2") & (df.probe == "mlp")]
    for modality in ("x", "t"):
        got = r2[r2.modality == modality].set_index("target")["value"]
        invariant = [f"s_{i}" for i in range(2, 8)]  # θ = {0..7} minus β = {0,1}
        biased = ["s_0", "s_1", "s_8", "s_9", "m_x", "m_t"]
        assert (got[invariant] >= 0.9).all(), got[invariant]
        assert (got[biased] <= 0.3).all(), got[biased]
