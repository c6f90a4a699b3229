"""Loss values checked against hand computations, and how ReidLoss combines the terms."""

import math

import pytest
import torch

from reidnet.losses import CenterLoss, CrossEntropyLabelSmooth, ReidLoss, TripletLoss

# Four 2-D points, two identities:
#   p0 = (0, 0) id 0, p1 = (3, 4) id 0, p2 = (1, 0) id 1, p3 = (0, 2) id 1.
# Distances: d01 = 5, d02 = 1, d03 = 2, d12 = sqrt(20), d13 = sqrt(13), d23 = sqrt(5).
# Hardest positive / hardest negative per anchor:
#   p0: 5 / min(1, 2) = 1           p1: 5 / min(sqrt20, sqrt13) = sqrt13
#   p2: sqrt5 / min(1, sqrt20) = 1  p3: sqrt5 / min(2, sqrt13) = 2
# Margin 0.3: mean of (5 - 1 + .3, 5 - sqrt13 + .3, sqrt5 - 1 + .3, sqrt5 - 2 + .3), all > 0,
#   = (7.2 - sqrt13 + 2 sqrt5) / 4 = 1.9666...
POINTS = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 0, 1, 1])
HARDEST_POSITIVE = [5.0, 5.0, math.sqrt(5), math.sqrt(5)]
HARDEST_NEGATIVE = [1.0, math.sqrt(13), 1.0, 2.0]


def test_batch_hard_triplet_on_hand_made_points():
    loss, dist_ap, dist_an = TripletLoss(margin=0.3)(POINTS, LABELS)
    expected = (7.2 - math.sqrt(13) + 2 * math.sqrt(5)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert dist_ap.tolist() == pytest.approx(HARDEST_POSITIVE, abs=1e-5)
    assert dist_an.tolist() == pytest.approx(HARDEST_NEGATIVE, abs=1e-5)


def test_triplet_is_zero_when_identities_are_further_apart_than_the_margin():
    # Clusters of diameter 1 that are 10 apart: every d_an - d_ap >= 9 > 0.3.
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    loss, _, _ = TripletLoss(margin=0.3)(points, LABELS)
    assert loss.item() == 0.0


def test_soft_margin_triplet_is_mean_softplus_of_the_gap():
    loss, _, _ = TripletLoss(margin=None)(POINTS, LABELS)
    gaps = [ap - an for ap, an in zip(HARDEST_POSITIVE, HARDEST_NEGATIVE, strict=True)]
    expected = sum(math.log1p(math.exp(gap)) for gap in gaps) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_triplet_gradient_is_finite_with_duplicate_features():
    # Identical features put a zero distance off the diagonal: the sqrt must not produce NaN.
    points = torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    loss, _, _ = TripletLoss(margin=0.3)(points, LABELS)
    loss.backward()
    assert torch.isfinite(points.grad).all()


def test_triplet_computes_in_float32_under_bf16_autocast():
    features = POINTS.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, dist_ap, _ = TripletLoss(margin=0.3)(features, LABELS)
    assert loss.dtype == torch.float32 and dist_ap.dtype == torch.float32
    # These points are exact in bf16, so the value is the float32 one.
    assert loss.item() == pytest.approx((7.2 - math.sqrt(13) + 2 * math.sqrt(5)) / 4, abs=1e-5)


def test_label_smoothing_against_hand_computation():
    # 3 classes, epsilon 0.1: target = 0.9 * onehot + 0.1 / 3.
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    log_norm = math.log(math.exp(2) + math.exp(1) + 1)
    log_p = [2 - log_norm, 1 - log_norm, 0 - log_norm]
    q = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    first = -sum(qk * lk for qk, lk in zip(q, log_p, strict=True))
    second = math.log(3)  # uniform prediction: -log(1/3) whatever the target
    loss = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.1)(logits, labels)
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-6)
    # The reference below (used for ReidLoss's terms) agrees with this hand computation.
    reference = smoothed_cross_entropy(logits.tolist(), labels.tolist(), epsilon=0.1)
    assert reference == pytest.approx((first + second) / 2, abs=1e-12)


def test_label_smoothing_zero_is_plain_cross_entropy():
    # -log softmax of the labelled score: log(e^2 + e + 1) - 2 for row 0, log 3 for row 1.
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.0)(logits, torch.tensor([0, 2]))
    expected = (math.log(math.exp(2) + math.exp(1) + 1) - 2 + math.log(3)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_smoothing_costs_a_confident_correct_prediction_and_helps_a_wrong_one():
    """The smoothed target penalises certainty: a large correct margin costs more than plain
    cross-entropy, and a confident wrong answer costs less (it is 0.9, not 1, on the label)."""
    right = torch.tensor([[10.0, 0.0, 0.0]])
    wrong = torch.tensor([[0.0, 10.0, 0.0]])
    label = torch.tensor([0])
    plain = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.0)
    smooth = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.1)
    assert smooth(right, label) > plain(right, label)
    assert smooth(wrong, label) < plain(wrong, label)


def test_label_smoothing_rejects_scores_of_another_class_count():
    with pytest.raises(ValueError, match="4 classes"):
        CrossEntropyLabelSmooth(num_classes=3)(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_center_loss_on_hand_example():
    center_loss = CenterLoss(num_classes=2, feat_dim=2)
    with torch.no_grad():
        center_loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    features = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    # ||(3,4) - (0,0)||^2 = 25, ||(1,2) - (1,1)||^2 = 1; summed and divided by the batch size.
    loss = center_loss(features, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(13.0)
    loss.backward()
    # d/dc0 of 25/2 = -(x0 - c0) = (-3, -4); c1: -(0, 1).
    torch.testing.assert_close(center_loss.centers.grad, torch.tensor([[-3.0, -4.0], [0.0, -1.0]]))


# Classifier scores of the four POINTS over 3 classes, small enough to follow by hand.
SCORES = [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 3.0, 0.0]]
# The triplet term of POINTS at margin 0.3 (worked out at the top of the file).
TRIPLET = (7.2 - math.sqrt(13) + 2 * math.sqrt(5)) / 4


def smoothed_cross_entropy(scores: list[list[float]], labels: list[int], epsilon: float) -> float:
    """Mean over rows of -sum_k q_k log p_k, with p = softmax(row) and
    q = (1 - epsilon) * onehot(label) + epsilon / K: the formula, in plain Python floats."""
    total = 0.0
    for row, label in zip(scores, labels, strict=True):
        log_norm = math.log(sum(math.exp(score) for score in row))
        for k, score in enumerate(row):
            target = (1 - epsilon) * (k == label) + epsilon / len(row)
            total -= target * (score - log_norm)
    return total / len(scores)


def _inputs():
    cls_score = torch.tensor(SCORES, requires_grad=True)
    return cls_score, POINTS.clone().requires_grad_(True), LABELS


def test_softmax_sampler_uses_the_identity_loss_only():
    cls_score, features, labels = _inputs()
    terms = ReidLoss(3, 2, sampler="softmax")(cls_score, features, labels)
    assert set(terms) == {"id", "total"}
    expected = smoothed_cross_entropy(SCORES, labels.tolist(), epsilon=0.1)
    assert terms["total"].item() == pytest.approx(expected, abs=1e-6)


def test_triplet_sampler_uses_the_triplet_loss_only():
    cls_score, features, labels = _inputs()
    terms = ReidLoss(3, 2, sampler="triplet")(cls_score, features, labels)
    assert set(terms) == {"triplet", "total"}
    assert terms["total"].item() == pytest.approx(TRIPLET, abs=1e-5)


def test_softmax_triplet_sums_identity_and_triplet_and_backpropagates():
    cls_score, features, labels = _inputs()
    terms = ReidLoss(3, 2, sampler="softmax_triplet", label_smooth=False)(
        cls_score, features, labels
    )
    assert set(terms) == {"id", "triplet", "total"}
    # Unsmoothed: -log softmax of each labelled score (labels 0, 0, 1, 1).
    plain = [
        math.log(math.exp(2) + math.exp(1) + 1) - 2,
        math.log(3),
        math.log(2 * math.e + 1),
        math.log(math.exp(3) + 2) - 3,
    ]
    assert terms["id"].item() == pytest.approx(sum(plain) / 4, abs=1e-6)
    assert terms["triplet"].item() == pytest.approx(TRIPLET, abs=1e-5)
    assert terms["total"].item() == pytest.approx(sum(plain) / 4 + TRIPLET, abs=1e-5)
    terms["total"].backward()
    assert cls_score.grad is not None and features.grad is not None


def test_center_loss_is_added_with_its_weight():
    cls_score, features, labels = _inputs()
    loss = ReidLoss(
        3, 2, metric_loss_type="triplet_center", with_center_loss=True, center_loss_weight=0.5
    )
    assert loss.center_loss.centers.shape == (3, 2)
    with torch.no_grad():
        loss.center_loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    terms = loss(cls_score, features, labels)
    assert set(terms) == {"id", "triplet", "center", "total"}
    # Squared offsets from the label's center: p0 0, p1 (3,4) 25, p2 (0,-1) 1, p3 (-1,1) 2.
    assert terms["center"].item() == pytest.approx(28 / 4)
    identity = smoothed_cross_entropy(SCORES, labels.tolist(), epsilon=0.1)
    expected = identity + TRIPLET + 0.5 * 28 / 4
    assert terms["total"].item() == pytest.approx(expected, abs=1e-5)


def test_identity_and_triplet_weights_scale_their_terms_in_the_total():
    cls_score, features, labels = _inputs()
    loss = ReidLoss(3, 2, id_loss_weight=0.5, triplet_loss_weight=2.0)
    terms = loss(cls_score, features, labels)
    identity = smoothed_cross_entropy(SCORES, labels.tolist(), epsilon=0.1)
    assert terms["id"].item() == pytest.approx(identity, abs=1e-6)  # unweighted in the dict
    assert terms["total"].item() == pytest.approx(0.5 * identity + 2.0 * TRIPLET, abs=1e-5)


def test_center_metric_replaces_the_triplet_term():
    cls_score, features, labels = _inputs()
    loss = ReidLoss(3, 2, metric_loss_type="center", with_center_loss=True)
    terms = loss(cls_score, features, labels)
    assert set(terms) == {"id", "center", "total"}
    assert loss.triplet_loss is None


def test_without_center_loss_there_are_no_centers_to_optimise():
    assert ReidLoss(3, 2).center_loss is None
    assert list(ReidLoss(3, 2).parameters()) == []


def test_distances_of_close_features_keep_their_digits():
    """||a||^2 + ||b||^2 - 2ab cancels almost everything for close features: in float32 (and
    TF32, what a float32 matmul becomes on CUDA at matmul precision "high") the distance below
    drowns in rounding error of about 1e-3 absolute; the expected value is the direct
    difference norm, computed in float64."""
    from reidnet.losses import pairwise_euclidean

    generator = torch.Generator().manual_seed(0)
    anchor = torch.randn(2048, generator=generator) * 3.0  # ||a||^2 ~ 18,000
    offset = torch.randn(2048, generator=generator) * 1e-3
    features = torch.stack([anchor, anchor + offset])
    expected = (features[0].double() - features[1].double()).norm().item()  # ~0.045
    distances = pairwise_euclidean(features)
    assert distances.dtype == torch.float32
    assert distances[0, 1].item() == pytest.approx(expected, rel=1e-4)
    assert distances[1, 0].item() == pytest.approx(expected, rel=1e-4)
