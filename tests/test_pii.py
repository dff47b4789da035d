"""PII classifier: a table of positive and negative strings per category."""

from __future__ import annotations

import pytest

from privacy_cli.detect.pii import CATEGORIES, classify_lines, classify_pii

POSITIVE = {
    "email": [
        "john.doe@example.com",
        "Contact: info@my-company.co.uk",
        "a.b+tag@sub.domain.org",
        "MAIL: JANE@EXAMPLE.DE",
        "x_y@test.io today",
        "Write to max.mustermann@web.de",
    ],
    "url": [
        "https://example.com/path?q=1",
        "www.example.org",
        "example.com",
        "Visit bit.ly/abc123",
        "http://192.168.0.1/admin",
        "shop.example.co.uk/item",
    ],
    "card": [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "6011111111111117",
        "Card: 4012888888881881",
    ],
    "id_number": [
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "SSN 123-45-6789",
        "123-45-6789",
        "Passport No. X1234567",
        "L01X00T47",
        "ID: 987654321",
        "AB1234567C",
    ],
    "date": [
        "12.03.2021",
        "2021-03-12",
        "03/12/21",
        "12 March 2021",
        "March 12, 2021",
        "Mar 5",
        "5. Mai 2020",
        "le 14 juillet 1789",
        "Born: 1/2/1990",
        "Dec 2020",
    ],
    "phone": [
        "+1 (555) 123-4567",
        "555-123-4567",
        "+49 30 12345678",
        "030 12345678",
        "06 12 34 56 78",
        "+44 20 7946 0958",
        "Tel: 0123 456789",
        "(020) 7946 0958",
        "07911123456",
        "0049 89 1234567",
    ],
    "address": [
        "221B Baker Street",
        "1600 Pennsylvania Avenue NW",
        "12 Main St.",
        "Hauptstraße 5",
        "Lindenweg 12a",
        "10 rue de Rivoli",
        "Calle Mayor 3",
        "Via Roma 12",
        "Kerkstraat 14",
        "London SW1A 1AA",
        "Flat 3, 22 Acacia Road",
    ],
    "person_name": [
        "John Smith",
        "Mr. John Smith",
        "Dr Jane Doe",
        "Angela Merkel",
        "Mary-Jane O'Neil",
        "Jean-Luc Picard",
        "Ludwig van Beethoven",
        "Name: Max Mustermann",
        "Frau Müller",
        "J. Smith",
        "Contact John Smith today",
        "Prof. K. Tanaka",
        "Olivia M. Weber",
        "Dr.Anna Schmidt",  # OCR dropped the space
    ],
}

# What OCR makes of personal strings (spaces dropped or inserted, ß read as B, 0 for O), and
# values after labels.
OCR_SLIPS = {
    "date": ["Born03.06.1983", "D.O.B.28.03.1945", "DOB 1 Jan", "Date of birth: 1985-3-12"],
    "id_number": ["IBANDE89370400440532013000", "ID N0:L1833689", "Passport No. 123456", "Passport: X12"],
    "address": ["899aMillAvenue", "766 WillowDrive,Apt 5", "SchillerstraBe 195", "42 Elm St"],
    "phone": ["Cal1+393123457519", "Tel. 12-34-56", "Mobile: +33 6 12 34 56 78"],
    "email": ["marco. kowalski@example. com"],
}

# Strings that must not be given the category they resemble.
NEAR_MISSES = {
    "email": ["a@b", "user@localhost", "@handle", "john.doe at example dot com", "mail@", "foo@bar."],
    "url": ["photo.jpg", "e.g. this", "3.14159", "Version 2.0.1", "file.txt", "Mr.Smith"],
    "card": [
        "4111 1111 1111 1112",  # Luhn fails
        "0000 0000 0000 0000",
        "1234 5678",
        "Order 12345",
        "4111 1111 111",
        "5500 0000 0000 0005",
    ],
    "id_number": [
        "DE89 3704 0044 0532 0130 01",  # IBAN checksum fails
        "COVID-19",
        "A4 paper",
        "RTX 4090",
        "Windows 11",
        "000-12-3456",
    ],
    "date": ["3.14", "Version 2.0.1", "3/4 cup", "10.5 km", "12:30", "May I help you", "32.13.2020"],
    "phone": ["2023", "Price 1299", "Room 101", "1.234.567", "Total: 12.50 EUR", "ISO 9001"],
    "address": [
        "Main Street",
        "Wall Street Journal",
        "Hauptstraße",
        "Route 66",
        "3 Ways to Win",
        "Street Food 24",
    ],
    "person_name": [
        "Hello World",
        "Thank You",
        "Grand Opening",
        "New York",
        "Happy Birthday",
        "Welcome Home",
        "HELLO WORLD",
        "john smith",
        "The Quick Brown Fox",
        "Free Wifi",
    ],
}

HARMLESS = [
    "Hello World",
    "EXIT",
    "Welcome",
    "SALE 50% OFF",
    "iPhone 15 Pro",
    "Open 9-17",
    "Page 12 of 30",
    "No smoking",
    "50000 Euros",
    "MP3",
    "Room 101",
    "Platform 3",
    "Gate B12",
    "Total 23.50",
    "25% off all shoes",
    "Since 1998",
    "FreeWiFi",
    "www",
    "",
    "   ",
]


@pytest.mark.parametrize("category,text", [(c, t) for c, ts in POSITIVE.items() for t in ts])
def test_positive(category, text):
    assert classify_pii(text) == category


@pytest.mark.parametrize("category,text", [(c, t) for c, ts in OCR_SLIPS.items() for t in ts])
def test_ocr_slips_and_labelled_values(category, text):
    assert classify_pii(text) == category


@pytest.mark.parametrize("category,text", [(c, t) for c, ts in NEAR_MISSES.items() for t in ts])
def test_near_miss(category, text):
    assert classify_pii(text) != category


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_has_no_category(text):
    assert classify_pii(text) is None


def test_table_covers_every_category():
    assert set(POSITIVE) == set(CATEGORIES) == set(NEAR_MISSES)
    assert all(len(v) >= 6 for v in POSITIVE.values())
    assert all(len(v) >= 6 for v in NEAR_MISSES.values())


def test_precedence_and_whitespace():
    assert classify_pii("John Smith  john@example.com") == "email"
    assert classify_pii("  +49 30\n12345678 ") == "phone"
    assert classify_pii("Card 4111 1111 1111 1111 valid 12/25") == "card"


def _box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_boxes_on_one_row_are_read_together():
    # a card number OCR returned as four digit groups, a slightly rotated row (the 3rd box sits lower)
    groups = [
        (_box(10 + 90 * i, 10 + 3 * i, 70 + 90 * i, 40 + 3 * i), g)
        for i, g in enumerate("4111 1111 1111 1111".split())
    ]
    assert classify_lines(groups) == ["card"] * 4 or all(c is not None for c in classify_lines(groups))
    # the same groups on four rows are just numbers
    assert (
        classify_lines([(_box(10, 10 + 60 * i, 70, 40 + 60 * i), g) for i, (_q, g) in enumerate(groups)])
        == [None] * 4
    )
    # a label and its value in separate boxes; the value alone would not be personal
    assert classify_lines([(_box(10, 10, 160, 40), "Passport"), (_box(190, 10, 300, 40), "1234567")]) == [
        "id_number",
        "id_number",
    ]
    # a benign box beside a personal one stays benign
    cats = classify_lines(
        [(_box(10, 10, 160, 40), "Pizza Napoli"), (_box(190, 10, 400, 40), "Tel 030 123456")]
    )
    assert cats == [None, "phone"]


def test_label_above_its_value_and_split_words():
    assert classify_lines([(_box(10, 10, 60, 40), "DOB"), (_box(12, 55, 200, 85), "12 Jan")]) == [
        "date",
        "date",
    ]
    assert (
        classify_lines([(_box(10, 10, 60, 40), "Name:"), (_box(12, 55, 200, 85), "Lee")])[1] == "person_name"
    )
    assert classify_lines([(_box(10, 10, 60, 40), "EXIT"), (_box(12, 55, 200, 85), "Welcome")]) == [
        None,
        None,
    ]
    # OCR split an e-mail at its dot: the fragment goes with it
    assert classify_lines([(_box(10, 10, 60, 40), "anna"), (_box(66, 10, 300, 40), ".silva@mail.de")]) == [
        "email",
        "email",
    ]
    # a country code split off a phone number, wider apart, but digits
    assert classify_lines([(_box(10, 10, 60, 40), "+49"), (_box(100, 10, 300, 40), "930-124090")]) == [
        "phone",
        "phone",
    ]


def test_personal_runs_become_one_region():
    from privacy_cli.detect.text import lines_to_regions

    lines = [
        (_box(10 + 90 * i, 10, 70 + 90 * i, 40), g, 0.99) for i, g in enumerate("4111 1111 1111 1111".split())
    ]
    lines.append((_box(10, 200, 120, 230), "EXIT", 0.98))
    regs = lines_to_regions(lines, "pii")
    assert len(regs) == 1 and regs[0].category is not None
    assert regs[0].box == pytest.approx((10, 10, 340, 40))  # the gaps between the groups are covered
    assert len(lines_to_regions(lines, "all")) == 2


def test_weak_lines_count_only_with_their_row():
    # OCR was unsure of "L.": alone it is nothing, before a surname it makes a name
    lines = [(_box(10, 10, 40, 40), "L."), (_box(52, 10, 200, 40), "Weber")]
    assert classify_lines(lines, weak=[True, False]) == ["person_name", "person_name"]
    assert classify_lines([lines[0]], weak=[True]) == [None]
    # an unsure fragment right after a card number's groups goes with it
    lines = [(_box(10, 10, 300, 40), "4111 1111 1111 1111"), (_box(330, 10, 380, 40), "%&")]
    assert classify_lines(lines, weak=[False, True]) == ["card", "card"]
    assert classify_lines([(_box(10, 10, 60, 40), "DOB")], weak=[True]) == [None]
