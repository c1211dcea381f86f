"""Unit tests for the check helpers added for assignments 03 and 05."""

import torch

import course_checks
from course_checks import multilabel_image_model


def test_multilabel_image_model_maps_images_to_one_logit_per_label():
    model = multilabel_image_model(num_labels=19, seed=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(5, 3, 32, 32)).shape == (5, 19)
        assert model(torch.zeros(1, 3, 64, 48)).shape == (1, 19)


def test_multilabel_image_model_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, second, other = (multilabel_image_model(seed=s) for s in (4, 4, 5))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(first[-1].weight, other[-1].weight)


def test_multilabel_image_model_dropout_separates_train_and_eval_mode():
    model = multilabel_image_model(seed=1)
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert model.training, "a fresh model starts in training mode, like any nn.Module"
    with torch.no_grad():
        trained = model(images)
        model.eval()
        evaluated, again = model(images), model(images)
    assert torch.equal(evaluated, again)
    assert not torch.allclose(trained, evaluated)
    assert not multilabel_image_model(dropout=0.0)[-2].p


def test_multilabel_image_model_is_a_test_cell_name():
    assert "multilabel_image_model" in course_checks.__all__
    assert "multilabel_image_model" in course_checks.TEST_CELL_NAMES


# -- assignment 03: what its hidden tests rely on ------------------------------------


def test_multilabel_image_model_built_twice_gives_bitwise_equal_eval_outputs():
    """a03's evaluate test calls the student twice on fresh models and names dropout when the losses differ."""
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        first = multilabel_image_model(num_labels=19, seed=2).eval()(images)
        second = multilabel_image_model(num_labels=19, seed=2).eval()(images)
        trained = multilabel_image_model(num_labels=19, seed=2)(images)
    assert torch.equal(first, second)
    assert not torch.equal(first, trained)


def test_a03_standard_bce_with_logits_forms_meet_the_float32_policy_at_1000():
    """Every stable float32 formulation passes a03's per-element check at |z| <= 1000; the named mistakes fail it."""
    import torch.nn.functional as F

    z = torch.tensor([-1000.0, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1000.0]).repeat(2)
    t = torch.cat([torch.zeros(9), torch.ones(9)])
    expected = F.binary_cross_entropy_with_logits(z.double(), t.double(), reduction="none")

    def softplus(x):
        return torch.clamp(x, min=0) + torch.log1p(torch.exp(-x.abs()))

    correct = {
        "clamp + log1p": (1 - t) * z + softplus(-z),
        "F.softplus": (1 - t) * z + F.softplus(-z),
        "logaddexp": (1 - t) * z + torch.logaddexp(torch.zeros_like(z), -z),
        "relu form": torch.relu(z) - z * t + torch.log1p(torch.exp(-z.abs())),
        "two softplus": t * softplus(-z) + (1 - t) * softplus(z),
        "torch float32": F.binary_cross_entropy_with_logits(z, t, reduction="none"),
    }
    for name, value in correct.items():
        course_checks.check_close(value, expected, what=name, scale=1000)
        course_checks.check_close(value, expected, what=name)  # no cancellation beyond an ulp: scale is headroom
    p = torch.sigmoid(z)
    mistakes = {
        "log of sigmoid": -(t * torch.log(p) + (1 - t) * torch.log(1 - p)),
        "BCELoss on sigmoid": F.binary_cross_entropy(p, t, reduction="none"),
    }
    for name, value in mistakes.items():
        try:
            course_checks.check_close(value, expected, what=name, scale=1000)
        except AssertionError:
            continue
        raise AssertionError(f"{name} passes the a03 extremes check")
