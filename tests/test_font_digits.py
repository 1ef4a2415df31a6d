"""Font-rendered training digits: real fonts, every class, deterministic, like the bundled
digits (light ink on black, 100x100), and only ever in the training split."""

import numpy as np

from training.data import Split
from training.font_digits import font_digits, font_files, with_font_digits


def test_fonts_render_every_class_like_the_bundled_digits():
    assert len(font_files()) >= 12  # matplotlib ships DejaVu, STIX and Computer Modern
    images, labels = font_digits(per_class=6, seed=3)
    assert images.shape == (18, 100, 100) and images.dtype == np.uint8
    assert list(np.bincount(labels)) == [6, 6, 6]
    assert (images[:, :3, :].max() < 40) and images.max(axis=(1, 2)).min() > 200  # ink, margin
    ink = (images > 127).mean(axis=(1, 2))
    assert ink.min() > 0.03 and ink.max() < 0.5
    again, _ = font_digits(per_class=6, seed=3)
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, font_digits(per_class=6, seed=4)[0])


def test_font_digits_join_the_training_split_only():
    train = Split(np.zeros((2, 100, 100), np.uint8), np.array([0, 1]), ())
    grown = with_font_digits(train, per_class=2, seed=1)
    assert len(grown.labels) == 8 and list(grown.labels[:2]) == [0, 1]
    assert len(grown.files) == 6 and str(grown.files[0]).startswith("font-digit:0")
