"""Regenerate the example photos in this folder (run: uv run python examples/make_examples.py).

astronaut.jpg: scikit-image's ``astronaut`` (Eileen Collins, NASA portrait, public domain) with an
EXIF block carrying a GPS position and a camera name added, so the metadata stripping is visible:
``privpix blur examples/astronaut.jpg`` writes ``astronaut_blur.jpg`` without them.
"""

from pathlib import Path

from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent


def main() -> None:
    img = Image.fromarray(data.astronaut())
    exif = Image.Exif()
    exif[0x010F] = "NASA"  # Make
    exif[0x0110] = "Example camera"  # Model
    exif[0x0132] = "1998:03:01 12:00:00"  # DateTime
    gps = {1: "N", 2: (29.0, 33.0, 36.0), 3: "W", 4: (95.0, 5.0, 24.0)}  # Johnson Space Center
    exif[0x8825] = gps
    img.save(HERE / "astronaut.jpg", quality=92, exif=exif.tobytes())


if __name__ == "__main__":
    main()
