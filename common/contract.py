"""The names and shapes fixed by ../shared/CONTRACT.md, in one place."""

MODEL_NAMES = ("scratch_cnn", "vgg16_finetuned")
CLASS_LABELS = ("0", "1", "2")
CLASS_FOLDERS = tuple(f"{label}_digits" for label in CLASS_LABELS)
DATASET_FOLDER = "Hand_written_digits"

IMAGE_SIZE = 100
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INPUT_SHAPE = (None, IMAGE_SIZE, IMAGE_SIZE, 1)
OUTPUT_SHAPE = (None, len(CLASS_LABELS))

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_OUTPUT = "artifacts"
