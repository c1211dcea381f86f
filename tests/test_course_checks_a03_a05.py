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
