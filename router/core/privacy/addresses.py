"""Street addresses, where a pattern can find them: a house number next to a street name that says it is
one (a suffix such as Street, Ave, Road; a type such as rue, Via, Calle; a compound such as -straße),
with a flat or suite number, a US city, state and ZIP code, or a UK postcode that follows it. UK postcodes
are found on their own too: their shape is distinctive.

Names are matched when capitalised, as addresses are written; "12 main street" in lower case, a
landmark ("the blue house by the church") or an address split over lines of a form is not found.
"""
from __future__ import annotations

import re
from typing import Iterator

Span = tuple[int, int]

# Whole words, then abbreviations (which may end in a dot: "St.", the dot of a sentence's end is left).
_STREET_SUFFIXES = (
    r"(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Place|Terrace|Way|Close|Crescent|Square|Parkway|Highway|"
    r"Circle|Trail|Mews|Gardens|Grove|Walk|Row|Alley)\b"
    r"|(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Ter|Cres|Sq|Pkwy|Hwy|Cir|Trl)\b\.?")
_NAME_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|#)\.?\s*#?\s*[A-Za-z0-9-]{1,6})?"
_US_TAIL = r"(?:,\s+[A-Z][A-Za-z]+(?:\s[A-Z][A-Za-z]+){0,2},?\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
UK_POSTCODE = r"(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})"
_UK_TAIL = rf"(?:,\s+(?:[A-Z][A-Za-z]+\s){{0,2}}{UK_POSTCODE})?"

# "221B Baker Street", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "12 West 34th St., Apt 5".
# No comma between the number and the street: "In 1879, Mosley Street ..." is a year, not a house.
_NUMBER_FIRST = re.compile(
    rf"(?<![\w.,-])\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:{_NAME_WORD}\s+){{1,4}}(?:{_STREET_SUFFIXES})"
    rf"(?:\s+(?:NE|NW|SE|SW|N|S|E|W)\b)?{_UNIT}{_US_TAIL}{_UK_TAIL}")
# "Hauptstraße 5", "Bahnhofstr. 12a", "Kalverstraat 92", "Kaiserring 3". A -ring street's stem is at least
# three letters and ends in a consonant, so English words ("During 15", "Considering 16", "Spring 2") are not.
_COMPOUND_FIRST = re.compile(
    r"(?<![\w-])[A-ZÄÖÜ](?:[a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|straat|laan|gracht|plein)"
    r"|[a-zäöüß]+[b-df-hj-np-tv-zß]ring)"
    r"\s+\d{1,4}\s?[a-z]?(?![\w])")
# "12 rue de la Paix", "8 bis avenue Victor Hugo".
_FRENCH = re.compile(
    r"(?<![\w.,-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|place|allée|impasse|chemin|quai|cours)"
    r"\s+(?:(?:de la|de l'|du|des|de|d')\s*)?[A-ZÉÈÂ][\w'’-]+(?:\s+(?:de |du |des |la |le )?[A-ZÉÈÂ][\w'’-]+){0,3}")
# "Via Roma 12", "Calle Mayor, 5", "Avenida de la Constitución 3", "Piazza San Marco 1".
_TYPE_FIRST = re.compile(
    r"(?<![\w])(?:Via|Viale|Piazza|Corso|Calle|Avenida|Avda\.|Plaza|Paseo|Rua|Travessa)"
    r"\s+(?:(?:de la|de los|de las|del|de|da|do|dei|della)\s+)?[A-ZÁÉÍÓÚ][\w'’-]+(?:\s+[A-ZÁÉÍÓÚ][\w'’-]+){0,3},?"
    r"\s+(?:n[º°o]\.?\s*)?\d{1,4}(?![\w])")
_UK_POSTCODE_ALONE = re.compile(rf"(?<![A-Za-z0-9]){UK_POSTCODE}(?![A-Za-z0-9])")
_PO_BOX = re.compile(r"(?<![\w])(?i:P\.?\s?O\.?\s+Box)\s+\d{1,6}(?![\w])")

ADDRESS_PATTERNS = (_NUMBER_FIRST, _COMPOUND_FIRST, _FRENCH, _TYPE_FIRST, _PO_BOX, _UK_POSTCODE_ALONE)


def find_addresses(text: str) -> Iterator[Span]:
    for pattern in ADDRESS_PATTERNS:
        for match in pattern.finditer(text):
            yield match.span()
