"""Equal tuning and seeds in a fit: the learning-rate sweep keeps the best run on dev and its
weights are exactly those of a plain fit at the chosen rate; the fit's seed seeds the method's own
initialisation (different seeds, different routers; the same seed, the same)."""

from __future__ import annotations

import pytest
import torch

from conftest import bigbench_task
from test_moe_layer import make_adapters
from loraocean.models import load
from loraocean.moe import fit_model
from loraocean.moe.tuning import sweep

TASK = bigbench_task("sports_understanding")
SAME = [(4, 8, ["q_proj", "v_proj", "up_proj", "down_proj", "gate_proj"], s) for s in (21, 22)]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return [str(p) for p in make_adapters(tmp_path_factory.mktemp("lib"), SAME)]


def _fit(adapters, method="loramoe", **kwargs):
    base, tok = load("tiny-llama")
    return fit_model(method, base, tok, adapters, TASK, preset="smoke", **kwargs)


def test_sweep_keeps_the_run_that_scores_best_on_dev(adapters):
    swept, card = _fit(adapters, lrs=[3e-4, 1e-3])
    record = card["lr_sweep"]
    assert record["grid"] == [3e-4, 1e-3] and record["dev_examples"] == 8
    scores = {float(k): v for k, v in record["dev"].items()}
    assert record["chosen"] == max(scores, key=lambda lr: (scores[lr], -[3e-4, 1e-3].index(lr)))
    assert card["train_config"]["lr"] == record["chosen"]
    # each grid value starts from the same weights and batches: the kept run IS a plain fit at it
    plain, _ = _fit(adapters, train={"lr": record["chosen"]})
    a, b = swept.moe_state_dict(), plain.moe_state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_sweep_order_and_ties():
    """A stand-in model whose 'training' writes the learning rate into its one tensor: every value
    starts from the start, the best score wins, a tie goes to the earlier value."""

    class Stub:
        def __init__(self):
            self.w = torch.zeros(1)
            self.seen = []

        def moe_state_dict(self):
            return {"w": self.w}

        def load_moe_state_dict(self, state):
            self.w = state["w"].clone()

        def train(self):
            pass

        def eval(self):
            pass

    stub = Stub()

    def train_one(lr):
        stub.seen.append(float(stub.w))  # where this value starts
        stub.w = stub.w + lr
        return f"log {lr}"

    scores = {0.1: 0.5, 0.2: 0.7, 0.3: 0.7}
    lr, got, log = sweep(stub, [0.1, 0.2, 0.3], train_one, lambda: scores[round(float(stub.w), 6)])
    assert (lr, log, float(stub.w)) == (0.2, "log 0.2", pytest.approx(0.2))
    assert got == scores and stub.seen == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("method", ["loramoe", "rocket", "xlora"])
def test_the_fit_seed_seeds_the_method_initialisation(adapters, method):
    """No fit steps: the router / classifier is its initialisation, which the seed decides."""

    def init(seed):
        base, tok = load("tiny-llama")
        moe, card = fit_model(method, base, tok, adapters, TASK, preset="smoke", seed=seed,
                              train={"max_steps": 1, "lr": 1e-12})
        assert card["options"]["seed"] == seed
        return {k: v for k, v in moe.moe_state_dict().items() if "router" in k or "classifier" in k}

    one, again, other = init(1), init(1), init(2)
    assert one and one.keys() == other.keys()
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not all(torch.equal(one[k], other[k]) for k in one)


def test_an_explicit_config_seed_is_kept(adapters):
    _, card = _fit(adapters, seed=3, options={"seed": 9})
    assert card["options"]["seed"] == 9 and card["seed"] == 3
