"""More varied training digits from what can be had offline: 0, 1 and 2 rendered from the
fonts installed packages ship (matplotlib's DejaVu, STIX and Computer Modern; Debian's
fonts where present), with their serifs, flags and feet, then slanted, turned, scaled and
thickened like handwriting. They join the training split only: the validation split stays
the bundled digits, unchanged, so figures stay comparable.

Rendered like the bundled digits: light ink on black, 100x100, the glyph's box centred and
about 45-75 % of the side high (the tf.data augmentation then varies them further).
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from common.contract import CLASS_LABELS, IMAGE_SIZE
from training.data import Split

# Fonts with the digits drawn at their usual code points (not symbol, display or math fonts).
FONT_NAMES = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic",
    "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmtt10", "cmti10",
)  # fmt: skip
SYSTEM_FONT_DIR = Path("/usr/share/fonts/truetype")
RENDER_SIZE = 200  # drawn at twice the side, then scaled down: smooth edges like a scan


def font_files() -> list[Path]:
    """The fonts above that are installed here, sorted (so a seed means the same set)."""
    import matplotlib

    shipped = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = {path.stem: path for path in shipped.glob("*.ttf") if path.stem in FONT_NAMES}
    if SYSTEM_FONT_DIR.is_dir():
        for path in SYSTEM_FONT_DIR.rglob("*.ttf"):
            if path.stem in FONT_NAMES:
                found.setdefault(path.stem, path)
    return [found[name] for name in sorted(found)]


def render(font: Path, digit: str, rng: np.random.Generator) -> np.ndarray:
    """One digit of one font, slanted, turned, scaled and thickened at random: uint8 [H, W]."""
    height = rng.uniform(0.45, 0.75) * RENDER_SIZE
    face = ImageFont.truetype(str(font), size=int(height * 1.35))
    canvas = Image.new("L", (RENDER_SIZE, RENDER_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), digit, font=face)
    origin = ((RENDER_SIZE - (right - left)) / 2 - left, (RENDER_SIZE - (bottom - top)) / 2 - top)
    draw.text(origin, digit, fill=255, font=face)
    shear = rng.uniform(-0.3, 0.3)
    centre = RENDER_SIZE / 2
    slant = (1.0, shear, -shear * centre, 0.0, 1.0, 0.0)
    canvas = canvas.transform(canvas.size, Image.AFFINE, slant, Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-12, 12), Image.BILINEAR)
    widen = int(rng.choice([1, 3, 5, 7]))  # handwriting strokes are broader than most fonts'
    if widen > 1:
        canvas = canvas.filter(ImageFilter.MaxFilter(widen))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), dtype=np.uint8)


def font_digits(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` rendered images of each class (fonts taken in turn): uint8 [N, 100, 100]
    and their int64 labels."""
    fonts = font_files()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, digit in enumerate(CLASS_LABELS):
        for index in range(per_class):
            images.append(render(fonts[index % len(fonts)], digit, rng))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def with_font_digits(train: Split, per_class: int, seed: int) -> Split:
    """The training split with `per_class` rendered digits of each class appended."""
    images, labels = font_digits(per_class, seed)
    names = tuple(Path(f"font-digit:{CLASS_LABELS[label]}:{i}") for i, label in enumerate(labels))
    return Split(
        np.concatenate([train.images, images]),
        np.concatenate([train.labels, labels]),
        train.files + names,
    )
