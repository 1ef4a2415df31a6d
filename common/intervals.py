"""How far an accuracy measured on a sample of images may be from the model's true one."""

import math


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy of `correct` in `total`: where the same
    model's accuracy on another sample of that size may well lie (on 623 images one image
    is 0.16 points, so a target of 99.7 % means at most one error)."""
    share, spread = correct / total, z * z / total
    centre = (share + spread / 2) / (1 + spread)
    half_width = z * math.sqrt(share * (1 - share) / total + spread / (4 * total)) / (1 + spread)
    return max(0.0, centre - half_width), min(1.0, centre + half_width)
