"""Task dataset loaders of `privpix train mask`, on tiny fixtures written in the published formats
(CelebA list_attr_celeba.txt / list_eval_partition.txt, FER2013 fer2013.csv + FER+ fer2013new.csv,
a file,label CSV and class folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privacy_cli.errors import InputError, UsageError
from privacy_cli.train.task_data import FERPLUS_EMOTIONS, open_task_data

# CelebA's 40 attributes, in the published column order
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
    "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
    "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
    "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _celeba(root: Path) -> None:
    (root / "img_align_celeba").mkdir(parents=True)
    hair = {  # file -> hair attributes set to 1
        "000001.jpg": ["Black_Hair"],
        "000002.jpg": ["Blond_Hair"],
        "000003.jpg": ["Brown_Hair", "Blond_Hair"],  # two colours: dropped
        "000004.jpg": [],  # none: dropped
        "000005.jpg": ["Gray_Hair"],
        "000006.jpg": ["Brown_Hair"],
    }
    lines = [str(len(hair)), " ".join(CELEBA_ATTRS)]
    for f, on in hair.items():
        vals = ["1" if a in on or a == "Young" else "-1" for a in CELEBA_ATTRS]
        lines.append(f"{f} " + " ".join(f"{v:>2}" for v in vals))  # CelebA pads -1/ 1 to two columns
        Image.fromarray(np.full((218, 178, 3), 100, np.uint8)).save(root / "img_align_celeba" / f)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = {
        "000001.jpg": 0,
        "000002.jpg": 0,
        "000003.jpg": 0,
        "000004.jpg": 1,
        "000005.jpg": 1,
        "000006.jpg": 2,
    }
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in parts.items()))


def test_celeba_hair_colour_keeps_images_with_exactly_one_colour(tmp_path: Path) -> None:
    _celeba(tmp_path)
    d = open_task_data(tmp_path)
    assert d.kind == "celeba-hair" and d.classes == ["black", "blond", "brown", "gray"]
    got = {s.name: (d.classes[s.label], s.split) for s in d.samples}
    assert got == {
        "000001.jpg": ("black", "train"),
        "000002.jpg": ("blond", "train"),
        "000005.jpg": ("gray", "val"),
        "000006.jpg": ("brown", "test"),
    }
    assert d.samples[0].rgb().shape == (218, 178, 3)


def _ferplus(root: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(6)]
    usage = ["Training", "Training", "PublicTest", "PrivateTest", "Training", "Training"]
    fer = ["emotion,pixels,Usage"] + [
        f"0,{' '.join(map(str, f.reshape(-1)))},{u}" for f, u in zip(faces, usage, strict=True)
    ]
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    votes = [  # neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
        (4, 0, 0, 6, 0, 0, 0, 0, 0, 0),  # sadness: dropped
        (0, 10, 0, 0, 0, 0, 0, 0, 0, 0),  # happiness
        (2, 0, 8, 0, 0, 0, 0, 0, 0, 0),  # surprise (validation)
        (5, 5, 0, 0, 0, 0, 0, 0, 0, 0),  # tie: dropped
        (7, 1, 1, 0, 0, 0, 0, 0, 1, 0),  # neutral
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 10),  # not a face; also excluded by an empty name below
    ]
    names = ["fer0000000.png", "fer0000001.png", "fer0000002.png", "fer0000003.png", "fer0000004.png", ""]
    new = ["Usage,Image name," + ",".join(FERPLUS_EMOTIONS)]
    for u, n, v in zip(usage, names, votes, strict=True):
        new.append(f"{u},{n}," + ",".join(map(str, v)))
    (root / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return faces


def test_ferplus_majority_vote_three_classes(tmp_path: Path) -> None:
    faces = _ferplus(tmp_path)
    d = open_task_data(tmp_path)
    assert d.kind == "ferplus" and d.classes == ["neutral", "happiness", "surprise"]
    got = {s.name: (d.classes[s.label], s.split) for s in d.samples}
    assert got == {
        "fer0000001.png": ("happiness", "train"),
        "fer0000002.png": ("surprise", "val"),
        "fer0000004.png": ("neutral", "train"),
    }
    s = d.samples[0]
    rgb = s.rgb()
    assert rgb.shape == (48, 48, 3) and np.array_equal(rgb[..., 0], faces[1])


def test_csv_and_class_folders(tmp_path: Path) -> None:
    for i, c in enumerate(["cat", "dog", "cat"]):
        p = tmp_path / "imgs" / c / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 50, np.uint8)).save(p)
    csvf = tmp_path / "labels.csv"
    csvf.write_text("file,label\ncat/0.png,cat\ndog/1.png,dog\ncat/2.png,cat\n")
    d = open_task_data(tmp_path / "imgs", csvf)
    assert d.kind == "csv" and d.classes == ["cat", "dog"] and [s.label for s in d.samples] == [0, 1, 0]
    f = open_task_data(tmp_path / "imgs")
    assert f.kind == "folders" and sorted((s.name, s.label) for s in f.samples) == [
        ("cat/0.png", 0),
        ("cat/2.png", 0),
        ("dog/1.png", 1),
    ]
    csvf.write_text("file,label\ncat/0.png,cat\nmissing.png,dog\n")
    with pytest.raises(InputError, match="missing.png"):
        open_task_data(tmp_path / "imgs", csvf)
    with pytest.raises(UsageError):
        open_task_data(tmp_path / "imgs", kind="imagenet")
