"""Checks for the text that names a plate, an imager and an imaging mode, wherever it enters.

Every source (file names, sidecars, Rock Maker exports, the robot upload manifest,
plug-in adapters) ends up storing these values; they are checked at the door so no
markup, control character or unknown mode is stored (a NUL in a text value makes
PostgreSQL raise, and markup is a trap for every page that shows the value).

- `check_barcode`: 1 to 128 characters, ASCII letters and digits and `- _ . : + #`,
  spaces only inside, starting with a letter or digit (`90j8`, `RI1000-0081`,
  `CT00123`). No `/`: a barcode is one URL path segment (`/api/v1/plates/<barcode>`)
  and one folder or file name in exports. ASCII only, so a look-alike letter (Cyrillic
  'а' for Latin 'a') cannot make a second plate out of one label.
- `check_imager`: 0 to 128 characters, the same rules plus `/` (`RI1000-0081`,
  `Minstrel HT/UV`); '' means 'not stated'.
- `check_imaging_mode`: one of `IMAGING_MODES`, any case; answers the lower-case name.
- `check_text`: any other free text (inspection ids, plate types, file names): at most
  128 characters, no control or invisible format characters.

Each raises ValueError saying what is allowed; the message quotes the value escaped,
so it is safe to store or show as it is.
"""

from __future__ import annotations

import string
import unicodedata

MAX_LENGTH = 128

IMAGING_MODES: tuple[str, ...] = ("visible", "uv", "sonicc", "ir")
"""The imaging modes an image can be stored under (its drop slot is inspection, drop, mode).

Where they come from: `visible` is the default of every adapter (Formulatrix flat export,
Rock Maker `ef` images, patterns, sidecars, manifests); the Rigaku CrystalTrak preset
names `vis` (-> visible), `uv`, `sonicc` (second-harmonic / UV-TPEF imaging) and `ir`
(infrared); sidecars and manifests state `uv` in the tests. A new mode is added here.
"""

_NAME_PUNCTUATION = "-_.:+#"
_BARCODE_CHARS = frozenset(string.ascii_letters + string.digits + _NAME_PUNCTUATION + " ")
_IMAGER_CHARS = _BARCODE_CHARS | {"/"}
# Control (Cc), invisible format (Cf: bidi overrides, zero-width), surrogate (Cs: not
# encodable as UTF-8) and line / paragraph separators (Zl, Zp).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def escape_controls(text: str) -> str:
    """`text` with each control, format or surrogate character written as an escape
    (NUL -> `\\x00`), so it can be stored and shown; tabs and newlines are kept."""
    if not any(_unsafe(char) for char in text):
        return text
    return "".join(
        char if char in "\t\n" or not _unsafe(char) else repr(char)[1:-1] for char in text
    )


def _show(value: str, limit: int = 40) -> str:
    """The value quoted and escaped (its start only, when long), for a message."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def _expect_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__} {value!r:.40}")
    return value


def _check_name(value: object, what: str, allowed: frozenset[str], extra: str, empty: bool) -> str:
    text = _expect_text(value)
    lowest = 0 if empty else 1
    rule = (
        f"{what} is {lowest} to {MAX_LENGTH} characters: ASCII letters, digits and "
        f"{' '.join(_NAME_PUNCTUATION + extra)}, spaces only inside, "
        "starting with a letter or digit"
    )
    if not text:
        if empty:
            return text
        raise ValueError(f"empty; {rule}")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"{_show(text)} is {len(text)} characters; {rule}")
    bad = next((char for char in text if char not in allowed), None)
    if bad is not None:
        kind = "a control character" if _unsafe(bad) else "the character"
        raise ValueError(f"{_show(text)} has {kind} {bad!r} (U+{ord(bad):04X}); {rule}")
    if not text[0].isalnum() or text[-1] == " ":
        raise ValueError(f"{_show(text)} starts with {text[0]!r} or ends with a space; {rule}")
    return text


def check_barcode(value: object) -> str:
    """The barcode, or ValueError saying what a barcode may be (see the module doc)."""
    return _check_name(value, "a barcode", _BARCODE_CHARS, "", empty=False)


def check_imager(value: object) -> str:
    """The imager name ('' allowed), or ValueError saying what it may be."""
    return _check_name(value, "an imager name", _IMAGER_CHARS, "/", empty=True)


def check_imaging_mode(value: object) -> str:
    """The known mode in lower case ('UV' -> 'uv'), or ValueError listing the known ones."""
    text = _expect_text(value)
    mode = text.strip().lower()
    if mode not in IMAGING_MODES:
        raise ValueError(f"unknown mode {_show(text)} (known: {', '.join(IMAGING_MODES)})")
    return mode


def check_text(value: object, max_length: int = MAX_LENGTH) -> str:
    """Other free text: at most `max_length` characters, no control or format characters."""
    text = _expect_text(value)
    if len(text) > max_length:
        raise ValueError(f"{_show(text)} is {len(text)} characters; at most {max_length}")
    bad = next((char for char in text if _unsafe(char)), None)
    if bad is not None:
        raise ValueError(
            f"{_show(text)} has a control or format character {bad!r} (U+{ord(bad):04X}); "
            "text may not hold control, format or line-separator characters"
        )
    return text
