"""Generated text scenes and the OCR re-read attack used to measure text privacy.

Two things are measured with this module (tests and ``benchmarks/bench_text_*.py``):

* **Readability after obfuscation**: an independent OCR engine (Tesseract, not the PP-OCR privpix
  detects with) tries to read each personal string back from an obfuscated image, on the full
  image and on a crop of the string upscaled 2x and sharpened, as an attacker would.
* **PII recall / false positives**: scenes mix personal strings (phones, e-mails, names with titles
  or initials, addresses, card numbers in digit groups, IBANs, labelled IDs and dates) with benign
  ones (shop signs, "EXIT", prices); the ground-truth box of each string says whether privpix's
  mask covered it.

Scenes are rendered with the DejaVu fonts (sans, serif, mono, condensed, bold, oblique) when
installed (Pillow's built-in font otherwise), 16-80 px, random colours, small rotations, on crops
of scikit-image's bundled photos, on plates or directly on the photo. Everything is seeded.
"""

from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------------------------
# strings

_FIRST = (
    "Anna Maria John Peter Laura Thomas Sofia Lukas Emma David Olivia James Chen Yuki Fatima Carlos "
    "Ingrid Pierre Amelie Jonas Sarah Michael Elena Marco Priya Ahmed Hannah Oliver Lucia Daniel"
).split()
_LAST = (
    "Schmidt Miller Garcia Rossi Dubois Novak Tanaka Kowalski Jensen Moreau Fischer Okafor Silva "
    "Andersson Becker Romano Nguyen Walsh Hoffmann Keller Murphy Costa Lindqvist Weber Brennan Patel"
).split()
_STREETS = "Baker Elm Oak Maple Church Mill Station Victoria Park Cedar Willow Highland Bridge King".split()
_STREET_TYPES = "Street St. Road Rd Avenue Ave Lane Drive Way Court Place".split()
_DOMAINS = ("example.com", "mail.de", "post.org", "inbox.net", "web.fr")

BENIGN = (
    "EXIT",
    "OPEN",
    "Emergency Exit",
    "SALE 50% OFF",
    "$4.99",
    "€12,50",
    "Coffee & Cake",
    "Fresh Bread Daily",
    "No Parking",
    "Welcome",
    "Pharmacy",
    "Open 9-17",
    "Platform 3",
    "Gate B12",
    "MENU",
    "Happy Hour 5-7 pm",
    "Total 23.50",
    "Ice Cream",
    "City Bakery",
    "Since 1998",
    "Room 204",
    "PUSH",
    "Bus Stop",
    "Zone 2",
    "Main Entrance",
    "Free WiFi",
    "Flat White 3.20",
    "HOTEL",
    "Pizza Napoli",
    "Tickets",
    "Car Park",
    "Level 2",
    "Toilets",
    "Books & Coffee",
    "Summer Sale",
    "New Arrivals",
    "Best Burgers in Town",
    "Cappuccino 2.80",
    "STOP",
    "Keep Left",
    "Pull",
    "Fire Assembly Point",
    "Closed on Sundays",
    "Today's Special",
    "Bicycle Parking",
    "Lift",
    "Reception",
    "Gift Shop",
    "25% off all shoes",
    "Price 19.99",
)


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def _iban(rng: np.random.Generator, country: str = "DE", length: int = 18) -> str:
    bban = "".join(str(d) for d in rng.integers(0, 10, length))
    num = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(num) % 97
    s = f"{country}{check:02d}{bban}"
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


def _phone(rng: np.random.Generator) -> str:
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    region = str(rng.choice(["US", "GB", "DE", "FR", "IT", "ES", "NL", "AU", "JP", "BR", "IN", "CH"]))
    kind = PhoneNumberType.MOBILE if rng.random() < 0.5 else PhoneNumberType.FIXED_LINE
    ex = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    num = ex
    for _ in range(20):  # vary the last digits, keep a valid number
        nat = str(ex.national_number)
        cand = nat[:-4] + "".join(str(d) for d in rng.integers(0, 10, 4))
        try:
            p = phonenumbers.parse("+" + str(ex.country_code) + cand)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(p):
            num = p
            break
    fmt = PhoneNumberFormat.INTERNATIONAL if rng.random() < 0.6 else PhoneNumberFormat.NATIONAL
    return phonenumbers.format_number(num, fmt)


def _name(rng: np.random.Generator) -> str:
    f, m, last = rng.choice(_FIRST), rng.choice(_FIRST), rng.choice(_LAST)
    form = int(rng.integers(0, 6))
    if form == 0:
        return f"{rng.choice(['Dr.', 'Dr', 'Prof.', 'Mr.', 'Mrs.', 'Ms'])} {f} {last}"
    if form == 1:
        return f"{f} {m[0]}. {last}"
    if form == 2:
        return f"{rng.choice(['Dr.', 'Mrs', 'Mr'])} {f[0]}. {last}"
    if form == 3:
        return f"{f[0]}. {last}"
    return f"{f} {last}"


def _address(rng: np.random.Generator) -> str:
    n = int(rng.integers(1, 2400))
    form = int(rng.integers(0, 5))
    street, typ = rng.choice(_STREETS), rng.choice(_STREET_TYPES)
    if form == 0:
        return f"{n} {street} {typ}"
    if form == 1:
        return f"{n}{rng.choice(['', 'B', 'a'])} {street} {rng.choice(['Street', 'Road', 'Avenue'])}"
    if form == 2:
        return f"{rng.choice(['Haupt', 'Bahnhof', 'Linden', 'Schiller'])}straße {n % 200 + 1}"
    if form == 3:
        return f"{n % 90 + 1} rue de la {rng.choice(['Paix', 'Gare', 'Republique'])}"
    return f"{n} {street} {typ}, Apt {int(rng.integers(1, 40))}"


def personal_item(rng: np.random.Generator, category: str) -> list[tuple[str, bool]]:
    """One personal line of ``category`` as segments ``[(text, is_secret), ...]`` (label + value)."""
    if category == "phone":
        label = str(rng.choice(["", "Tel: ", "Phone ", "Mobile: ", "Call "]))
        return [(label, False), (_phone(rng), True)] if label else [(_phone(rng), True)]
    if category == "email":
        f, last = str(rng.choice(_FIRST)).lower(), str(rng.choice(_LAST)).lower()
        return [(f"{f}.{last}@{rng.choice(_DOMAINS)}", True)]
    if category == "person_name":
        if rng.random() < 0.25:
            return [("Name: ", False), (_name(rng), True)]
        return [(_name(rng), True)]
    if category == "address":
        return [(_address(rng), True)]
    if category == "card":
        body = "4" + "".join(str(d) for d in rng.integers(0, 10, 14))
        num = body + _luhn_digit(body)
        gap = "   " if rng.random() < 0.5 else " "  # wide gaps: OCR may return separate groups
        return [(gap.join(num[i : i + 4] for i in range(0, 16, 4)), True)]
    if category == "iban":
        return [("IBAN ", False), (_iban(rng), True)]
    if category == "id_number":
        letters = "ABCDEFGHJKLMNPRTXYZ"
        val = str(rng.choice(list(letters))) + "".join(str(d) for d in rng.integers(0, 10, 7))
        label = str(rng.choice(["Passport No. ", "ID No: ", "Passport ", "Licence No. "]))
        return [(label, False), (val, True)]
    if category == "date":
        d, mo, y = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1940, 2010))
        label = str(rng.choice(["DOB ", "Date of birth: ", "Born ", "D.O.B. "]))
        return [
            (label, False),
            (f"{d:02d}.{mo:02d}.{y}" if rng.random() < 0.6 else f"{d:02d}/{mo:02d}/{y}", True),
        ]
    raise ValueError(f"unknown category {category!r}")


PERSONAL_CATEGORIES = ("phone", "email", "person_name", "address", "card", "iban", "id_number", "date")

# --------------------------------------------------------------------------------------------
# rendering


def font_paths() -> list[str]:
    """TrueType fonts to render with: the DejaVu family when installed (else empty: Pillow's default)."""
    found = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf"))
    return [f for f in found if "Math" not in f and "ExtraLight" not in f]


def _backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "brick", "grass"):
        try:
            img = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a missing sample image just means fewer backgrounds
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append(np.ascontiguousarray(img[..., :3]))
    return out


@dataclass
class Placed:
    """One rendered line: ``secret`` is its personal part (None for benign text), ``quad`` the
    4 corner points (x, y) of the secret part's ink box (or of the whole line when benign),
    ``line_quad`` those of the whole line, ``font_px`` the font size in pixels."""

    text: str
    secret: str | None
    category: str | None
    quad: np.ndarray
    line_quad: np.ndarray
    font_px: int


def _rot(points: np.ndarray, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    p = points - centre
    # PIL rotates counter-clockwise for positive angles in image coordinates (y down)
    return np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1]], axis=1) + centre


def render_scene(
    rng: np.random.Generator,
    lines: list[tuple[list[tuple[str, bool]], str | None]],
    sizes: tuple[int, int] = (16, 80),
    max_angle: float = 4.0,
    min_width: int = 640,
    font_px: list[int] | None = None,
) -> tuple[np.ndarray, list[Placed]]:
    """Render ``lines`` (segments, category) one per row over a photo crop -> ((H, W, 3) uint8, placements).

    Font sizes (pixels) are drawn from ``sizes`` (inclusive), or taken from ``font_px`` in turn.
    """
    from PIL import Image, ImageDraw, ImageFont

    fonts = font_paths()
    bgs = _backgrounds()
    layers = []
    for i, (segs, cat) in enumerate(lines):
        px = int(font_px[i % len(font_px)]) if font_px else int(rng.integers(sizes[0], sizes[1] + 1))
        font = ImageFont.truetype(str(rng.choice(fonts)), px) if fonts else ImageFont.load_default()
        text = "".join(s for s, _ in segs)
        bx0, by0, bx1, by1 = font.getbbox(text)
        pad = max(4, px // 3)
        lw, lh = bx1 - bx0 + 2 * pad, by1 - by0 + 2 * pad
        plate = rng.random() < 0.6
        pc = rng.integers(0, 256, 3)
        layer = Image.new("RGBA", (lw, lh), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        if plate:
            draw.rectangle((0, 0, lw - 1, lh - 1), fill=tuple(int(v) for v in pc) + (235,))
        ox, oy = pad - bx0, pad - by0
        # ink box of the secret part (layer x coordinates)
        sx0 = sx1 = None
        cursor = ""
        for s, secret in segs:
            if secret:
                left = font.getlength(cursor) + font.getbbox(s)[0]
                sx0 = ox + left if sx0 is None else sx0
                sx1 = ox + font.getbbox(cursor + s)[2]
            cursor += s
        angle = float(rng.uniform(-max_angle, max_angle))
        centre = (lw / 2, lh / 2)

        def quad(qx0: float, qx1: float, oy: int = oy, by0: int = by0, by1: int = by1) -> np.ndarray:
            return np.array([[qx0, oy + by0], [qx1, oy + by0], [qx1, oy + by1], [qx0, oy + by1]], float)

        secret_text = "".join(s for s, sec in segs if sec) or None
        line_q = _rot(quad(ox + bx0, ox + bx1), angle, centre)
        q = _rot(quad(sx0, sx1), angle, centre) if secret_text else line_q
        layers.append((layer, plate, pc, (ox, oy), text, font, angle, line_q, q, secret_text, cat, px))
    margin = 24
    sizes_rot = [layer[0].rotate(layer[6], expand=True).size for layer in layers]
    width = max(min_width, max(w for w, _ in sizes_rot) + 2 * margin)
    height = sum(h + margin for _, h in sizes_rot) + margin
    bg = bgs[int(rng.integers(len(bgs)))] if bgs else np.full((64, 64, 3), 128, np.uint8)
    canvas = np.asarray(Image.fromarray(bg).resize((width, height), Image.BILINEAR)).copy()
    placed: list[Placed] = []
    y = margin
    for (layer, plate, pc, (ox, oy), text, font, angle, line_q, q, secret_text, cat, px), (rw, rh) in zip(
        layers, sizes_rot, strict=True
    ):
        lw, lh = layer.size
        x = int(rng.integers(margin, max(margin + 1, width - rw - margin + 1)))
        under = canvas[y : y + rh, x : x + rw].reshape(-1, 3).astype(float)
        lum = float(under.mean(axis=0) @ [0.299, 0.587, 0.114])
        dark_ink = float(pc @ [0.299, 0.587, 0.114]) > 128 if plate else lum > 128
        ink = tuple(int(v) for v in (rng.integers(0, 70, 3) if dark_ink else rng.integers(190, 256, 3)))
        ImageDraw.Draw(layer).text((ox, oy), text, font=font, fill=ink + (255,))
        rot = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
        arr = np.asarray(rot).astype(np.float32)
        alpha = arr[..., 3:4] / 255.0
        patch = canvas[y : y + rh, x : x + rw].astype(np.float32)
        canvas[y : y + rh, x : x + rw] = np.round(patch * (1 - alpha) + arr[..., :3] * alpha).astype(np.uint8)
        shift = np.array([x + (rw - lw) / 2, y + (rh - lh) / 2])
        placed.append(Placed(text, secret_text, cat, q + shift, line_q + shift, px))
        y += rh + margin
    return canvas, placed


def make_scenes(
    seed: int,
    n_scenes: int,
    personal_per_scene: int = 3,
    benign_per_scene: int = 2,
    categories: tuple[str, ...] = PERSONAL_CATEGORIES,
    sizes: tuple[int, int] = (16, 80),
    font_px: list[int] | None = None,
) -> list[tuple[np.ndarray, list[Placed]]]:
    """``n_scenes`` seeded scenes, each with personal lines (categories in turn) and benign lines.

    font_px: sizes (pixels) given to the lines in turn across all scenes (drawn from ``sizes``
    when None)."""
    rng = np.random.default_rng(seed)
    scenes = []
    k = 0
    for _ in range(n_scenes):
        lines: list[tuple[list[tuple[str, bool]], str | None]] = []
        for _ in range(personal_per_scene):
            cat = categories[k % len(categories)]
            k += 1
            lines.append((personal_item(rng, cat), cat))
        for _ in range(benign_per_scene):
            lines.append(([(str(rng.choice(BENIGN)), False)], None))
        order = rng.permutation(len(lines))
        px = None
        if font_px:
            start = len(scenes) * len(lines)
            px = [font_px[(start + j) % len(font_px)] for j in range(len(lines))]
        scenes.append(render_scene(rng, [lines[i] for i in order], sizes=sizes, font_px=px))
    return scenes


# --------------------------------------------------------------------------------------------
# the attack


def tesseract_available() -> bool:
    """True when the ``tesseract`` binary and pytesseract are installed."""
    if shutil.which("tesseract") is None:
        return False
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return False
    return True


def normalise(s: str) -> str:
    """Upper-case letters and digits only (what a re-read is compared on)."""
    return "".join(c for c in s.upper() if c.isalnum())


def substring_distance(target: str, text: str) -> int:
    """Smallest edit distance between ``target`` and any substring of ``text`` (semi-global)."""
    if not target:
        return 0
    prev = [0] * (len(text) + 1)  # a match may start anywhere in text
    for i, tc in enumerate(target, 1):
        cur = [i] + [0] * len(text)
        for j, c in enumerate(text, 1):
            cur[j] = min(prev[j - 1] + (tc != c), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return min(prev)


#: a string counts as read back when at most this fraction of its characters is wrong
READ_TOLERANCE = 0.25


def is_read(secret: str, ocr_text: str, tolerance: float = READ_TOLERANCE) -> bool:
    """Whether ``ocr_text`` contains ``secret`` up to ``tolerance`` x its length in edits (letters
    and digits only, case-insensitive); a 10-character number read with 2 wrong digits counts."""
    t = normalise(secret)
    return bool(t) and substring_distance(t, normalise(ocr_text)) <= int(tolerance * len(t))


def _tess(img: np.ndarray, psm: int) -> str:
    import os

    import pytesseract

    # one thread per call: Tesseract's OpenMP threads only slow it down on small, busy machines
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    return str(pytesseract.image_to_string(img, config=f"--psm {psm}"))


def attack_crop(image: np.ndarray, quad: np.ndarray, upscale: float = 2.0) -> np.ndarray:
    """The attacker's view of one string: its box plus half a line of margin, upscaled (bicubic)
    and sharpened (unsharp mask, amount 1, sigma 1 px at the upscaled size)."""
    import cv2

    h, w = image.shape[:2]
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    m = 0.5 * float(np.linalg.norm(quad[3] - quad[0]))
    xi0, yi0 = max(0, int(x0 - m)), max(0, int(y0 - m))
    xi1, yi1 = min(w, int(np.ceil(x1 + m))), min(h, int(np.ceil(y1 + m)))
    crop = image[yi0:yi1, xi0:xi1]
    if upscale != 1.0:
        crop = cv2.resize(crop, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        soft = cv2.GaussianBlur(crop, (0, 0), 1.0)
        crop = cv2.addWeighted(crop, 2.0, soft, -1.0, 0)
    return crop


def read_back(
    image: np.ndarray, placed: list[Placed], upscales: tuple[float, ...] = (1.0, 2.0)
) -> list[bool]:
    """For each personal string in ``placed``: does Tesseract read it back from ``image``?

    Tried, and counted as read if any succeeds: the whole image (page segmentation 11, sparse
    text), then the string's line crop at each of ``upscales`` (2x: upscaled and sharpened; single
    line, psm 7). Benign lines give False.
    """
    full_text = _tess(image, 11)
    out = []
    for p in placed:
        if p.secret is None:
            out.append(False)
            continue
        hit = is_read(p.secret, full_text)
        for up in upscales:
            if hit:
                break
            hit = is_read(p.secret, _tess(attack_crop(image, p.line_quad, up), 7))
        out.append(hit)
    return out


def coverage(mask: np.ndarray, quad: np.ndarray) -> float:
    """Fraction of the quadrilateral ``quad`` (4, 2) covered by ``mask > 0`` (H, W)."""
    import cv2

    poly = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(poly, [np.round(quad).astype(np.int32)], 1)
    n = int(poly.sum())
    return float(((mask > 0) & (poly > 0)).sum()) / n if n else 0.0


#: a personal string counts as found when privpix's mask covers this fraction of its ink box
FOUND_COVERAGE = 0.9
#: a benign string counts as altered when privpix's mask covers more than this fraction of it
ALTERED_COVERAGE = 0.1


def score_pii(
    scenes: list[tuple[np.ndarray, list[Placed]]],
    ocr_lines: list[list[tuple[list[tuple[float, float]], str, float]]],
) -> dict:
    """Recall of personal strings and rate of benign strings altered, for ``scenes`` whose OCR lines
    (``RapidOCRTextDetector.read_lines``) are ``ocr_lines``; classified and masked as ``privpix``
    does with ``--text pii``. Keys starting with ``_`` list the misses (synthetic strings)."""
    from collections import Counter

    from ..detect.text import lines_to_regions
    from ..pipeline import TEXT_SCALE
    from ..regions import Regions

    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    benign = benign_altered = 0
    misses: list[str] = []
    altered: list[str] = []
    for (img, placed), lines in zip(scenes, ocr_lines, strict=True):
        regs = Regions((img.shape[1], img.shape[0]), lines_to_regions(lines, "pii"))
        mask = regs.to_mask(text_scale=TEXT_SCALE)
        for p in placed:
            if p.secret is not None:
                total[str(p.category)] += 1
                if coverage(mask, p.quad) >= FOUND_COVERAGE:
                    found[str(p.category)] += 1
                else:
                    misses.append(f"{p.category}: {p.text!r} ({p.font_px} px)")
            else:
                benign += 1
                if coverage(mask, p.line_quad) > ALTERED_COVERAGE:
                    benign_altered += 1
                    altered.append(f"{p.text!r} ({p.font_px} px)")
    n, k = sum(total.values()), sum(found.values())
    return {
        "personal": n,
        "found": k,
        "recall": k / max(1, n),
        "per_category": {c: f"{found[c]}/{total[c]}" for c in sorted(total)},
        "benign": benign,
        "benign_altered": benign_altered,
        "benign_altered_rate": benign_altered / max(1, benign),
        "_misses": misses,
        "_altered": altered,
    }
