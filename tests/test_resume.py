"""Resuming into grown training data: the classifier and the optimizer state keep what they knew."""

import pytest
import torch

from reidnet.errors import ReidnetError
from reidnet.training.resume import grown, pad_optimizer_state


def test_grown_keeps_the_known_rows_and_takes_the_new_rows_from_the_fresh_model():
    saved = {"classifier.weight": torch.arange(6.0).reshape(3, 2), "other": torch.ones(1)}
    fresh = {"classifier.weight": torch.full((5, 2), -1.0), "other": torch.zeros(1)}
    result = grown(saved, fresh, "classifier.weight")
    expected = torch.tensor([[0.0, 1], [2, 3], [4, 5], [-1, -1], [-1, -1]])
    assert torch.equal(result["classifier.weight"], expected)
    assert torch.equal(result["other"], torch.ones(1))  # other keys untouched
    assert saved["classifier.weight"].shape == (3, 2)  # the checkpoint's dict is not changed


def test_fewer_identities_than_the_checkpoint_knows_is_refused_with_the_counts():
    saved = {"centers": torch.zeros(6, 2)}
    with pytest.raises(ReidnetError, match=r"knows 6 identities.*now has 4"):
        grown(saved, {"centers": torch.zeros(4, 2)}, "centers")


def test_adam_moments_of_a_grown_parameter_are_zero_padded():
    small = torch.nn.Parameter(torch.ones(2, 3))
    optimizer = torch.optim.Adam([small], lr=0.1)
    small.grad = torch.ones(2, 3)
    optimizer.step()
    state = optimizer.state_dict()
    big = torch.nn.Parameter(torch.ones(4, 3))
    grown_optimizer = torch.optim.Adam([big], lr=0.1)
    grown_optimizer.load_state_dict(state)
    pad_optimizer_state(grown_optimizer)
    moments = grown_optimizer.state[big]
    # After one step with gradient 1: exp_avg = 0.1, exp_avg_sq = 0.001 (betas 0.9, 0.999).
    torch.testing.assert_close(moments["exp_avg"][:2], torch.full((2, 3), 0.1))
    torch.testing.assert_close(moments["exp_avg_sq"][:2], torch.full((2, 3), 0.001))
    assert torch.equal(moments["exp_avg"][2:], torch.zeros(2, 3))
    assert torch.equal(moments["exp_avg_sq"][2:], torch.zeros(2, 3))
    big.grad = torch.ones(4, 3)
    grown_optimizer.step()  # the padded state has the parameter's shape: the step runs
