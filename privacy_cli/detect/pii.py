"""Classify a recognised text string into a PII category (or None).

``classify_pii(text)`` returns the first matching category in this order of precedence:

=========== ====================================================================================
email       ``local@domain.tld`` anywhere in the string.
url         ``http(s)://...``, ``www.…``, or a bare domain ending in a common TLD
            (``example.com``, ``bit.ly/x``); file names such as ``photo.jpg`` are not URLs.
card        13-19 digits (spaces or dashes allowed between them) that pass the Luhn check
            and are not one repeated digit.
id_number   an IBAN with a valid mod-97 checksum; a US SSN ``123-45-6789``; a value after an ID
            label (``ID``, ``No.``, ``Passport``, ``SSN``, ``Ausweis``, ``Kundennr`` ...); or, checked
            after date and phone, a single token of 8-24 letters/digits with >= 4 digits and a
            letter (``L01X00T47``), or of >= 9 bare digits.
date        ``d.m.yyyy`` / ``d/m/yy`` / ``d-m-yyyy`` with day <= 31 and month <= 12 (either
            order), ISO ``yyyy-mm-dd``, or a month name (English, German, French, Spanish, with
            common abbreviations) next to a day or a year (``12 March 2021``, ``Mar 5``).
phone       7-15 digits written like a phone number: a leading ``+``/``00``, an area code in
            brackets, two or more digit groups separated by spaces/dashes/dots/slashes (but
            not thousands like ``1.234.567``), 9-12 digits starting with 0, or a phone label
            (``Tel``, ``Phone``, ``Mobile``, ``Fax`` ...) before the number.
address     a house number next to a street word: ``221B Baker Street``, ``12 Main St.``
            (English street words after the number), ``Hauptstraße 5``, ``Kerkstraat 14``
            (German/Dutch street suffixes before the number), ``10 rue de Rivoli``,
            ``Calle Mayor 3``, ``Via Roma 12`` (Romance street words before the name); also a UK
            postcode (``SW1A 1AA``).
phone/address also: a valid number of any region found by ``phonenumbers``; a street address
            (number, street, street type; no city needed) parsed by ``usaddress``.
person_name a title before a capitalised word (``Mr. Smith``, ``Dr Jane Doe``, ``Frau Müller``);
            a name label (``Name: ...``); or a run of 2-3 capitalised words (hyphens,
            apostrophes, initials ``J.`` and particles ``van``, ``de`` ... allowed), after
            dropping common words at either end, containing no common word (``Hello World``,
            ``Grand Opening``, ``New York`` are not names). All-capitals text is not treated as a
            name (too many signs are written that way).
=========== ====================================================================================

labelled    finally, a value after a label in the same string (``DOB 1 Jan``, ``Tel. 12-34``,
            ``Passport: X12``, ``Name: Lee``) takes the label's category.

Every rule is also tried on the string with OCR's spacing slips undone (``Born03.06.1983``,
``IBANDE89...``, ``Call+39...``; not for the capitalised-words name rule). The rules are
deliberately conservative: a string that matches nothing returns None. :func:`classify_lines`
classifies OCR boxes together with their neighbours on the same row and labels above values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

CATEGORIES = ("email", "url", "card", "id_number", "date", "phone", "address", "person_name")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")

_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|us|uk|de|fr|es|it|nl|be|ch|at|se|no|"
    "dk|fi|pl|cz|ru|cn|jp|kr|in|br|au|ca|mx|eu|ly|gl|gg|fm|xyz|online|site|shop|store|blog|news|tech|ie|pt|"
    "gr|tr|hu|ro|sk|si|hr|ua|za|nz|ar|cl|lu|li|is|ee|lv|lt"
)
_URL_SCHEME = re.compile(r"(?i)\b(?:https?|ftp)://[^\s/$.?#][^\s]*")
_URL_WWW = re.compile(r"(?i)(?<![\w.-])www\.[a-z0-9\-]+(?:\.[a-z0-9\-]+)+")
_URL_BARE = re.compile(
    rf"(?i)(?<![\w@.\-])(?:[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?\.)+(?:{_TLDS})(?![\w\-])(?:/\S*)?"
)

_CARD = re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])")

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![\d\-])(\d{3})-(\d{2})-(\d{4})(?![\d\-])")
_ID_LABEL = re.compile(
    r"(?i)\b(?:id|ident|n[o0]|nr|num|number|passport|passeport|pasaporte|reisepass|ausweis(?:-?nr)?|"
    r"personalausweis|licen[cs]e|ssn|sin|nin|nino|tax ?id|vat|ust-?id|steuer-?id|account|acct|konto(?:nummer)?|"
    r"kundennr|kundennummer|customer ?no|member ?no|policy|matricule|dni|nie|nif|cpf|aadhaar|pesel)"
    r"(?![a-z])\.?\s*(?:n[o0]\.?|nr\.?|#|number)?\s*[:#]?\s*([A-Z0-9][A-Z0-9\-/ ]{4,}[A-Z0-9])",
)

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|"
    "januar|februar|märz|maerz|mai|juni|juli|oktober|dezember|"
    "janvier|février|fevrier|mars|avril|juin|juillet|août|aout|septembre|octobre|novembre|décembre|decembre|"
    "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre"
)
_DATE_NUM = re.compile(r"(?<![\w.,/\-])(\d{1,2})([./\-])(\d{1,2})\2(\d{4}|\d{2})(?![\w/\-]|\.\d)")
_DATE_ISO = re.compile(r"(?<![\w.,/\-])(\d{4})([./\-])(\d{1,2})\2(\d{1,2})(?![\w/\-]|\.\d)")
_DATE_DAY_MONTH = re.compile(
    rf"(?i)(?<![\w.])(\d{{1,2}})(?:st|nd|rd|th|er)?\.?\s+(?:de\s+)?(?:{_MONTHS})\b\.?(?:,?\s+(?:de\s+)?\d{{4}})?"
)
_DATE_MONTH_DAY = re.compile(
    rf"(?i)(?<![\w])(?:{_MONTHS})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?!\d)(?:,?\s+\d{{4}})?(?![\d:])"
)
_DATE_MONTH_YEAR = re.compile(rf"(?i)(?<![\w])(?:{_MONTHS})\.?,?\s+(?:de\s+)?(?:1[89]|20|21)\d\d(?!\d)")

_PHONE = re.compile(r"(?<![\w.,])(?:\+|00)?\(?\d[\d \-./()]{4,}\d(?![\w])")
_PHONE_LABEL = re.compile(
    r"(?i)\b(?:tel|tél|phone|telefon|telephone|téléphone|teléfono|mobile|mobil|mob|cell|handy|fax|whatsapp)"
    r"\.?\s*[:.]?\s*(?:\+|00)?\(?\d[\d \-./()]{4,}\d"
)

_STREET_AFTER = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|place|pl|square|sq|"
    "terrace|highway|hwy|parkway|pkwy|crescent|close|gardens|grove|row|mews|alley"
)
_ADDR_NUM_FIRST = re.compile(
    rf"(?i)(?<![\w.])\d{{1,5}}[a-z]?[.,]?\s+(?:[A-Za-zÀ-ÿ'\-]+\s+){{1,3}}(?:{_STREET_AFTER})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
)
_ADDR_SUFFIX = re.compile(
    r"(?i)(?<![\w])[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ\-]*(?:stra(?:ß|ss|b|β|f|8)e|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|"
    r"straat|laan|gracht|plein|kade|singel|steeg)\s*\d{1,4}\s?[a-z]?(?![\w])"
)
_ADDR_ROMANCE = re.compile(
    r"(?i)(?:(?<![\w.])\d{1,5}[a-z]?,?\s+)?\b(?:rue|avenue|boulevard|bd|chemin|allée|impasse|quai|calle|avenida|"
    r"paseo|plaza|carrera|via|viale|piazza|corso|rua|travessa|largo|praça)\s+(?:(?:de|del|de la|des|du|da|do|"
    r"della|di|dos|das|la|le|les)\s+)?[A-ZÀ-Ýa-zà-ÿ][\wÀ-ÿ'\-]*(?:\s+[A-ZÀ-Ý][\wÀ-ÿ'\-]*){0,2},?(?:\s+(?:n[º°o.]\s*)?\d{1,5}[a-z]?)?"
)
_UK_POSTCODE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}(?![A-Za-z0-9])")

_TITLES = re.compile(
    r"(?<![\w])(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Lady|Lord|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Sig|Sig\.ra)"
    r"\.?\s+(?:(?:[A-Z]\.\s*)*[A-ZÀ-Ý][a-zà-ÿ'\-]+|(?:[A-Z]\.\s*)+)"
)
_NAME_LABEL = re.compile(
    r"(?i)\b(?:name|full name|first name|last name|surname|vorname|nachname|nom|prénom|prenom|nombre|apellido)"
    r"\s*:\s*[A-Za-zÀ-ÿ]"
)
_PARTICLES = set("van von der den de da di del della du le la bin ibn al zu".split())

# Words common enough on signs, labels and captions that a capitalised run containing them is not
# taken for a name (lower case; English, German, French, Spanish).
_COMMON = set(
    """
a about after again against all also always am an and another any are around as at away back bad be because been
before being best better between big black blue both but by call can cannot care center centre city click close
closed club coffee come coming company contact could daily day days dear delivery do does done down during each
early east easy enter entrance every exit explore family fast find first floor follow food for free fresh friday
from fun get give go going gold golden good grand great green group hall happy has have he health hello help her
here high his home hot hotel house how i if in inc information inside into is it its just keep kitchen last late
learn less life light like limited line little live local long look love ltd made main make man many market me
menu merry monday more most much my name new news next night no north not now of off office old on one only open
opening or order other our out outside over park parking people place please plus power price private pull push
read ready real red report restaurant right road room rooms royal sale saturday school sea season see service
shop show side sign since so some south special sport spring star start station stay stop store street studio
summer sunday super support table take team than thank thanks that the their them then there these they this
those through thursday time to today together top total tour town travel tuesday two under union university up
us use very view visit wait wall want was water way we wednesday week welcome well west what when where which
while white who why will winter with world would year yes you your
new york london paris berlin america american europe european national international street avenue road
bridge gate tower river lake mountain beach airport bank bar cafe café pizza burger
fire assembly point ice cream cake bread wifi lift toilets reception tickets bus car
saint san santa st christmas easter holiday birthday anniversary wedding congratulations happy holidays
january february march april may june july august september october november december
quick slow brown orange yellow purple pink grey gray silver dark bright wild sweet fine fox dog cat bird fish tree
art music book books film movie game games photo photos news daily weekly magazine journal times post press
monday tuesday wednesday thursday friday saturday sunday
der die das und mit von für ist nicht ein eine zum zur im am bei auf aus nach bitte danke willkommen ausgang
eingang geöffnet geschlossen straße strasse platz
le la les et de du des un une pour avec sur dans par bienvenue merci sortie entrée ouvert fermé rue
el los las y con por para una bienvenido gracias salida entrada abierto cerrado calle
""".split()
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    s = raw.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    s = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in s)
    return int(num) % 97 == 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _is_email(t: str) -> bool:
    return bool(_EMAIL.search(t))


def _is_url(t: str) -> bool:
    return bool(_URL_SCHEME.search(t) or _URL_WWW.search(t) or _URL_BARE.search(t))


def _is_card(t: str) -> bool:
    for m in _CARD.finditer(t):
        d = _digits(m.group(0))
        if 13 <= len(d) <= 19 and len(set(d)) > 1 and _luhn_ok(d):
            return True
    return False


def _is_strong_id(t: str) -> bool:
    for m in _IBAN.finditer(t.upper() if t.isupper() else t):
        if _iban_ok(m.group(0)):
            return True
    for m in _SSN.finditer(t):
        a, g, s = m.groups()
        if a not in ("000", "666") and not a.startswith("9") and g != "00" and s != "0000":
            return True
    for m in _ID_LABEL.finditer(t):
        if len(_digits(m.group(1))) >= 3:
            return True
    return False


def _is_date(t: str) -> bool:
    for m in _DATE_NUM.finditer(t):
        a, b = int(m.group(1)), int(m.group(3))
        if a >= 1 and b >= 1 and ((a <= 31 and b <= 12) or (a <= 12 and b <= 31)):
            return True
    for m in _DATE_ISO.finditer(t):
        y, mo, d = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if 1800 <= y <= 2199 and 1 <= mo <= 12 and 1 <= d <= 31:
            return True
    for m in _DATE_DAY_MONTH.finditer(t):
        if 1 <= int(m.group(1)) <= 31:
            return True
    for m in _DATE_MONTH_DAY.finditer(t):
        if 1 <= int(m.group(1)) <= 31:
            return True
    return bool(_DATE_MONTH_YEAR.search(t))


def _is_phone(t: str) -> bool:
    if _PHONE_LABEL.search(t):
        return True
    for m in _PHONE.finditer(t):
        s = m.group(0).strip()
        d = _digits(s)
        if not 7 <= len(d) <= 15:
            continue
        if s.startswith("+") or s.startswith("00") or "(" in s:
            return True
        groups = re.split(r"[ \-./]+", s)
        if len(groups) >= 2:
            # thousands separators (1.234.567, 12 345 678) are numbers, not phone numbers
            if all(len(g) == 3 for g in groups[1:]) and len(groups[0]) <= 3:
                continue
            if all(g.isdigit() for g in groups):
                return True
        elif d.startswith("0") and 9 <= len(d) <= 12:
            return True
    return False


def _is_weak_id(t: str) -> bool:
    for tok in re.split(r"\s+", t):
        tok = tok.strip(".,;:()[]{}\"'")
        core = re.sub(r"[\-/]", "", tok)
        if not core.isalnum() or not core.isascii():
            continue
        nd = sum(c.isdigit() for c in core)
        na = sum(c.isalpha() for c in core)
        if 8 <= len(core) <= 24 and nd >= 4 and na >= 1:
            return True
        if na == 0 and nd >= 9:
            return True
    return False


def _is_address(t: str) -> bool:
    if _ADDR_NUM_FIRST.search(t) or _ADDR_SUFFIX.search(t) or _UK_POSTCODE.search(t):
        return True
    for m in _ADDR_ROMANCE.finditer(t):
        if re.search(r"\d", m.group(0)):
            return True
    return False


def _name_token(tok: str) -> str | None:
    """'word' for a capitalised word, 'initial' for ``J.``, 'particle', or None."""
    if tok.lower() in _PARTICLES and tok[:1].islower():
        return "particle"
    if re.fullmatch(r"[A-ZÀ-Ý]\.", tok):
        return "initial"
    core = tok.replace("-", "").replace("'", "").replace("’", "")
    if len(core) >= 2 and core.isalpha() and tok[0].isupper() and any(c.islower() for c in core):
        return "word"
    return None


def _is_person_name(t: str) -> bool:
    if _TITLES.search(t) or _NAME_LABEL.search(t):
        return True
    toks = [x.strip(',;:!?"()') for x in t.split()]
    runs: list[list[str]] = []
    cur: list[str] = []
    for tok in toks:
        if tok and _name_token(tok):
            cur.append(tok)
        else:
            if cur:
                runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    for run in runs:
        # drop common words and particles at the ends
        while run and (run[0].lower() in _COMMON or _name_token(run[0]) == "particle"):
            run = run[1:]
        while run and (run[-1].lower() in _COMMON or _name_token(run[-1]) != "word"):
            run = run[:-1]
        words = [w for w in run if _name_token(w) == "word"]
        if not 2 <= len(words) + sum(_name_token(w) == "initial" for w in run) <= 4 or not words:
            continue
        if len(words) > 3:
            continue
        if any(w.lower() in _COMMON for w in words):
            continue
        return True
    return False


def _is_phone_lib(t: str) -> bool:
    """A valid phone number of any region found by ``phonenumbers`` (Google's libphonenumber
    metadata): international numbers with ``+``, national ones of the common regions."""
    if sum(c.isdigit() for c in t) < 6:
        return False
    import phonenumbers

    regions = ("US",) if "+" in t else _PHONE_REGIONS
    for region in regions:
        for _m in phonenumbers.PhoneNumberMatcher(t, region, leniency=phonenumbers.Leniency.VALID):
            return True
    return False


_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "CH", "AT", "BE", "AU", "IN", "BR", "JP")


def _is_street_address(t: str) -> bool:
    """A street address (number, street name and street type, no city needed) parsed by
    ``usaddress`` (a CRF trained on US addresses; ``221B Baker Street``, ``766 Willow Dr, Apt 5``)."""
    if not re.search(r"\d", t) or not re.search(r"[A-Za-z]{2}", t):
        return False
    import usaddress

    try:
        parts, kind = usaddress.tag(t)
    except usaddress.RepeatedLabelError:
        return False
    return bool(
        kind == "Street Address"
        and re.fullmatch(r"\d{1,6}[A-Za-z]?", parts.get("AddressNumber", ""))
        and parts.get("StreetName")
        and (parts.get("StreetNamePostType") or parts.get("StreetNamePreType"))
    )


def _respace(t: str) -> str:
    """Undo the spacing slips OCR makes: words run together (``Born03.06.1983``, ``899aMillAvenue``,
    ``IBANDE72...``, ``Call+39...``, ``D.O.B.28.03``) or spaces inside e-mails (``a. b@c. com``)."""
    s = re.sub(r"(?i)(?<=stra)[bβf8](?=e\b)", "ß", t)  # straBe: ß read as B
    s = re.sub(r"(?i)^(iban)\s*:?\s*(?=[A-Z]{2}\d{2})", r"\1 ", s)
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", s)  # camel case: MillAvenue
    s = re.sub(r"(?<![A-Za-z])[lI|](?=\d{1,4}\b)", "1", s)  # l37: 1 read as l
    s = re.sub(r"(?<=[a-z])(?=\d)", " ", s)  # Born03
    s = re.sub(r"(?<=[A-Za-z])(?=\d{1,2}[./-]\d{1,2}[./-]\d{2,4})", " ", s)  # DOB06.04.1972
    s = re.sub(r"(?<=\d)(?=[a-z]{3})", " ", s)  # 49rue
    s = re.sub(  # ruedelaRepublique
        r"(?i)\b(rue|calle|via|rua|avenida|viale|piazza)(de|del|della|du|des|da|do)?(la|le|les)?(?=\s?[A-Z])",
        lambda m: " ".join(g for g in m.groups() if g),
        s,
    )
    s = re.sub(r"(?<=[A-Za-z0-9])(?=\+\d)", " ", s)  # Call+39
    s = re.sub(r"(?<=[A-Za-z]\.)(?=\d)", " ", s)  # D.O.B.28
    s = re.sub(r"(?<=[a-z]\.)(?=[A-Z])|(?<=\b[A-Z]\.)(?=[A-Z][a-z])", " ", s)  # Dr.Anna, A.Miller
    s = re.sub(r"(?<=[,;:])(?=[A-Za-z0-9])", " ", s)  # Drive,Apt  No:L18
    s = re.sub(r"(?<=\w)\.\s+(?=[a-z])|\s*@\s*", lambda m: "@" if "@" in m.group(0) else ".", s)
    return " ".join(s.split())


def _classify(t: str, names: bool = True) -> str | None:
    if _is_email(t):
        return "email"
    if _is_url(t):
        return "url"
    if _is_card(t):
        return "card"
    if _is_strong_id(t):
        return "id_number"
    if _is_date(t):
        return "date"
    if _is_phone(t):
        return "phone"
    if _is_weak_id(t):
        return "id_number"
    if _is_address(t):
        return "address"
    if _is_phone_lib(t):
        return "phone"
    if _is_street_address(t):
        return "address"
    if _TITLES.search(t) or _NAME_LABEL.search(t) or (names and _is_person_name(t)):
        return "person_name"
    return _labelled_value(t)


def classify_pii(text: str) -> str | None:
    """PII category of ``text``: one of :data:`CATEGORIES`, or None when it looks harmless.

    The text is also tried with OCR's spacing slips undone (``Born03.06.1983`` -> ``Born 03.06.1983``);
    the capitalised-words name rule then only for one token that splits into words of 3 or more
    letters (``SofiaMiller``; splitting ``WiFi`` must not make a name).
    """
    t = " ".join(str(text).split())
    if not t:
        return None
    cat = _classify(t)
    if cat is None:
        v = _respace(t)
        if v != t:
            cat = _classify(v, names=False)
            # a name run together (SofiaMiller, C.Keller): words of 3+ letters or initials (not WiFi)
            words = v.split()
            if (
                cat is None
                and " " not in t
                and all(len(w) >= 3 or re.fullmatch(r"[A-Z]\.", w) for w in words)
                and _is_person_name(v)
            ):
                cat = "person_name"
    return cat


# --------------------------------------------------------------------------------------------
# lines -> categories: OCR boxes are read together with their neighbours

#: a label alone (in its own OCR box), and the category it gives the value next to or below it
_LABELS = (
    (
        "person_name",
        r"(?:full |first |last |family |given )?name|surname|vorname|nachname|nom|pr[ée]nom|nombre|apellidos?",
    ),
    ("phone", r"tel(?:ephone)?|t[ée]l[ée]?phone|phone|telefon|mobile?|mob|cell|handy|fax|whatsapp"),
    (
        "date",
        r"dob|d\.?o\.?b|date of birth|birth ?date|born|geburtsdatum|geb(?:oren)?|date de naissance|n[ée]e? le",
    ),
    (
        "id_number",
        r"passport(?: ?(?:no|nr|number|#))?|id(?: ?(?:no|nr|number|#))?|licen[cs]e(?: ?(?:no|number))?|"
        r"ssn|social security(?: no| number)?|iban|account(?: ?(?:no|number))?|acct|policy(?: ?no)?|"
        r"member(?: ?no)?|customer(?: ?no)?|ausweis(?:-?nr)?|reisepass|personalausweis|kundennr|tax ?id|vat ?no",
    ),
    ("address", r"address|addr|adresse|anschrift|direcci[óo]n|home address"),
    ("email", r"e-?mail"),
)
_LABEL_RE = [(cat, re.compile(rf"(?i)^\s*(?:{pat})\s*[.:#]*\s*$")) for cat, pat in _LABELS]
_LABEL_VALUE_RE = [
    (cat, re.compile(rf"(?i)^\s*(?:{pat})\s*(?:[.:#]\s*|\s)\s*(?=\S*[A-Za-z0-9])(.{{2,}})$"))
    for cat, pat in _LABELS
]


def label_category(text: str) -> str | None:
    """Category a label gives its value: ``"DOB"`` -> date, ``"Passport No."`` -> id_number,
    ``"Tel:"`` -> phone (None when ``text`` is not one of the known labels alone)."""
    for cat, rx in _LABEL_RE:
        if rx.match(text):
            return cat
    return None


def _labelled_value(text: str) -> str | None:
    """Category of ``"<label> <value>"`` in one string, e.g. ``"DOB 1 Jan"``, ``"Name: Lee"``."""
    for cat, rx in _LABEL_VALUE_RE:
        m = rx.match(text)
        if m and sum(c.isalnum() for c in m.group(1)) >= 2:
            if cat == "email" and "@" not in m.group(1):
                continue
            return cat
    return None


@dataclass
class _Line:
    index: int
    text: str
    x0: float
    x1: float
    y0: float
    y1: float
    height: float
    slope: float  # dy/dx of the line's top edge
    weak: bool = False  # OCR was unsure of the text

    def y_at(self, x: float) -> float:
        """Centre y of the line extended to ``x``."""
        return (self.y0 + self.y1) / 2 + self.slope * (x - (self.x0 + self.x1) / 2)


def _as_line(i: int, quad: Sequence[Sequence[float]], text: str) -> _Line:
    pts = [(float(p[0]), float(p[1])) for p in quad]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    slope = 0.0
    height = max(ys) - min(ys)
    if len(pts) == 4:  # PP-OCR order: top-left, top-right, bottom-right, bottom-left
        (ax, ay), (bx, by), (cx, cy), (dx, dy) = pts
        if abs(bx - ax) > 1e-6:
            slope = (by - ay) / (bx - ax)
        height = (math.hypot(dx - ax, dy - ay) + math.hypot(cx - bx, cy - by)) / 2
    return _Line(i, text, min(xs), max(xs), min(ys), max(ys), max(1.0, height), slope)


def _same_row(a: _Line, b: _Line, max_gap: float = 3.0) -> bool:
    """``b`` continues ``a``'s row to the right: similar height, on a's line, a small gap after a."""
    h = max(a.height, b.height)
    if min(a.height, b.height) < 0.6 * h:
        return False
    gap = b.x0 - a.x1  # negative when OCR's padded boxes overlap
    if gap > max_gap * h or gap < -1.0 * h or b.x1 <= a.x1:
        return False
    return abs(a.y_at((b.x0 + b.x1) / 2) - (b.y0 + b.y1) / 2) < 0.45 * h


def _below(a: _Line, b: _Line) -> bool:
    """``b`` is the value under label ``a`` (forms): starts under it, within 2 line heights."""
    h = a.height
    return 0 <= b.y0 - a.y1 + 0.2 * h < 2.0 * h and abs(b.x0 - a.x0) < 1.5 * h


def classify_lines(
    lines: Sequence[tuple[Sequence[Sequence[float]], str]], weak: Sequence[bool] | None = None
) -> list[str | None]:
    """PII category (or None) of each OCR line ``(quad, text)``, read with its neighbours.

    quad: 4 (x, y) corner points in pixels (PP-OCR order: top-left, top-right, bottom-right,
    bottom-left; other polygons work with their bounding box). Beyond :func:`classify_pii` of each
    line on its own:

    * boxes on one row (similar height, aligned, gaps under 3 line heights: OCR often splits a line
      at wide spaces) are joined left to right; every smallest run of neighbours whose joined
      text is personal gets that category (``"4111" "1111" "1111" "1111"`` -> card,
      ``"Passport" "X12345"`` -> id_number);
    * a box continuing a personal one (a gap under 0.6 line heights: a word OCR split, as
      ``"anna"`` + ``"silva@mail.de"``; or digits within 1.5 line heights of a number, as ``"+49"``;
      or a box OCR could not read confidently, ``weak``) takes its category;
    * a label alone in its box (``"Name:"``, ``"Tel"``, ``"DOB"``, ``"Passport No."``, ``"IBAN"`` ...)
      makes the box right of it on its row, or else the box below it, personal with the label's
      category, whatever the value looks like; the label box then takes that category too.

    weak: per line, True when OCR was unsure of it (low recognition score): such a line is never
    personal on its own, only as part of a row (``"L."`` + ``"Weber"``) or as a fragment.
    """
    return _classify_rows(lines, weak)[0]


def pii_runs(
    lines: Sequence[tuple[Sequence[Sequence[float]], str]], weak: Sequence[bool] | None = None
) -> list[tuple[list[int], str]]:
    """Personal runs of OCR lines: ``[(indices left to right, category), ...]``, each run being
    neighbouring boxes of one row that are all personal (one card number split into 4 boxes is one
    run); every personal line is in exactly one run. Categories as :func:`classify_lines`."""
    cats, rows = _classify_rows(lines, weak)
    runs: list[tuple[list[int], str]] = []
    for row in rows:
        cur: list[int] = []
        for i in row + [-1]:
            if i >= 0 and cats[i] is not None:
                cur.append(i)
                continue
            if cur:
                counts: dict[str, int] = {}
                for j in cur:
                    counts[cats[j]] = counts.get(cats[j], 0) + 1  # type: ignore[index]
                best = max(counts.values())
                runs.append((cur, next(cats[j] for j in cur if counts[cats[j]] == best)))  # type: ignore[misc]
            cur = []
    return runs


_NUMERIC = ("phone", "card", "id_number", "date")
_NUMBERISH = re.compile(r"[\d\s+\-./()]{1,10}")


def _continues(src: _Line, dst: _Line, cat: str) -> bool:
    """Whether row neighbour ``dst`` is a fragment of the personal string in ``src`` (a weak line
    within 1.5 line heights counts too)."""
    h = max(src.height, dst.height)
    gap = dst.x0 - src.x1 if dst.x0 >= src.x0 else src.x0 - dst.x1
    if gap < 0.6 * h or (dst.weak and gap < 1.5 * h):
        return True
    return cat in _NUMERIC and gap < 1.5 * h and bool(_NUMBERISH.fullmatch(dst.text.strip()))


def _classify_rows(
    lines: Sequence[tuple[Sequence[Sequence[float]], str]], weak: Sequence[bool] | None = None
) -> tuple[list[str | None], list[list[int]]]:
    """Categories of :func:`classify_lines` and the rows (line indices left to right)."""
    weak = list(weak) if weak is not None else [False] * len(lines)
    items = [_as_line(i, q, str(t)) for i, (q, t) in enumerate(lines)]
    for ln, w in zip(items, weak, strict=True):
        ln.weak = w
    cats: list[str | None] = [None if w else classify_pii(t) for (_q, t), w in zip(lines, weak, strict=True)]
    # rows: chains of boxes continuing each other left to right
    order = sorted(items, key=lambda ln: ln.x0)
    nxt: dict[int, _Line] = {}
    has_prev: set[int] = set()
    for a in order:
        cands = [b for b in order if b.index != a.index and b.index not in has_prev and _same_row(a, b)]
        if cands:
            b = min(cands, key=lambda c: c.x0)
            nxt[a.index] = b
            has_prev.add(b.index)
    rows: list[list[_Line]] = []
    for start in (ln for ln in order if ln.index not in has_prev):
        row = [start]
        while row[-1].index in nxt and len(row) < 64:
            row.append(nxt[row[-1].index])
        rows.append(row)
        for a, b in zip(row, row[1:], strict=False):  # a label before a value on the row
            lab = None if a.weak else label_category(a.text)
            if lab and cats[b.index] is None:
                cats[b.index] = lab
        if len(row) < 2:
            continue
        known = {}
        alone = list(cats)  # each box's own category: what minimality is judged against
        for size in range(2, min(len(row), 6) + 1):
            for s in range(len(row) - size + 1):
                win = row[s : s + size]
                cat = classify_pii(" ".join(ln.text for ln in win))
                known[(s, size)] = cat
                if cat is None or known.get((s + 1, size - 1), _first(alone, win[1:])) == cat:
                    continue
                if known.get((s, size - 1), _first(alone, win[:-1])) == cat:
                    continue
                for ln in win:
                    if cats[ln.index] is None:
                        cats[ln.index] = cat
        changed = True
        while changed:  # fragments of a personal string
            changed = False
            for a, b in zip(row, row[1:], strict=False):
                for src, dst in ((a, b), (b, a)):
                    cat = cats[src.index]
                    if cat is not None and cats[dst.index] is None and _continues(src, dst, cat):
                        cats[dst.index] = cat
                        changed = True
    # a label alone whose value is not on its row: the box below it
    for a in items:
        lab = label_category(a.text)
        if lab is None or a.index in nxt:
            continue
        below = [b for b in items if b.index != a.index and _below(a, b)]
        if below:
            b = min(below, key=lambda c: c.y0)
            if cats[b.index] is None:
                cats[b.index] = lab
            if cats[a.index] is None:
                cats[a.index] = cats[b.index]
    # a label with its value: the label box too (it tells what the value is)
    for a in items:
        if cats[a.index] is None and a.index in nxt and label_category(a.text):
            cats[a.index] = cats[nxt[a.index].index]
    return cats, [[ln.index for ln in row] for row in rows]


def _first(cats: list[str | None], win: list[_Line]) -> str | None:
    """The category of a one-box window (a longer window's category is looked up in ``known``)."""
    return cats[win[0].index] if len(win) == 1 else None
