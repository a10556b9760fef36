"""Text exports of Raman spectra, as instruments and their software write them.

Read by layout, not by file name (every vendor writes ``.txt``):

- **B&W Tek** (BWSpec / BWRam): a ``key;value`` header block, then a ``;``-separated table under
  ``Pixel;Wavelength;Wavenumber;Raman Shift;Dark;Reference;Raw data #1;Dark Subtracted #1;...``,
  often with decimal commas. The axis is ``Raman Shift``, the intensity ``Dark Subtracted #k``
  (one spectrum per ``#k``); pixels outside the calibrated range have an empty Raman shift and
  are left out.
- **Horiba LabSpec**: a single spectrum is two tab-separated columns (``#key=\\tvalue`` lines
  before them are metadata); a map or series is *wide*: the first row holds the axis after one
  (series: time) or two (map: X, Y) empty cells, each further row the position(s) and a spectrum.
- **Renishaw WiRE** (text export): *long*: ``[#X #Y | #Z | #Time] #Wave #Intensity`` columns, one
  line per channel, spectra one after another (the axis usually decreasing).
- **WITec Project** ("Table" export): the first column the axis, one spectrum per further column,
  optionally under a line of spectrum names and a line of units.
- generic: two columns (x, intensity), or a CSV matrix (first row the axis, one spectrum per row).

Cells may be separated by tabs, ``;``, ``,`` or spaces; with a separator other than ``,``, decimal
commas are read as decimal points. Every failure names the layout the file looked like and the
layouts that can be read.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

import numpy as np

from nanolens_runtime.errors import InvalidArgument

SUPPORTED = ("two-column text (x, intensity); CSV matrix (first row the axis, one spectrum per row); "
             "B&W Tek BWSpec/BWRam text export; Horiba LabSpec text export (spectrum, series or map); "
             "Renishaw WiRE text export ([X, Y | Z | Time,] Wave, Intensity columns); WITec Project "
             "'Table' export (first column the axis, one spectrum per column); NumPy .npy/.npz")

# Binary vendor files: (magic at offset 0 or suffix) -> what it is and how to get text out of it.
_BINARY_MAGIC = (
    (b"WDF1", "a Renishaw WiRE .wdf file", "WiRE: File > Save As > .txt, or its batch converter"),
    (b"WIT_PR", "a WITec Project .wip file", "WITec Project: Export > Table"),
    (b"WIT_DA", "a WITec data .wid file", "WITec Project: Export > Table"),
    (b"WIT_PRCT", "a WITec Project .wip file", "WITec Project: Export > Table"),
    (b"\x89PNG", "a PNG image", ""),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"II*\x00", "a TIFF image", ""),
    (b"MM\x00*", "a TIFF image", ""),
    (b"PK\x03\x04", "a zip archive", ""),
    (b"\x93NUMPY", "a NumPy .npy array (give it the .npy extension)", ""),
    (b"%PDF", "a PDF document", ""),
)
VENDOR_SUFFIXES = {
    ".wdf": ("a Renishaw WiRE .wdf file", "WiRE: File > Save As > .txt, or its batch converter"),
    ".wip": ("a WITec Project .wip file", "WITec Project: Export > Table"),
    ".wid": ("a WITec data .wid file", "WITec Project: Export > Table"),
    ".spc": ("a Galactic/Thermo .spc file", "your software's text or CSV export"),
    ".l6s": ("a Horiba LabSpec 6 .l6s file", "LabSpec: File > Save As > .txt"),
    ".l6m": ("a Horiba LabSpec 6 .l6m map", "LabSpec: File > Save As > .txt"),
    ".l5s": ("a Horiba LabSpec 5 .l5s file", "LabSpec: File > Save As > .txt"),
    ".ngs": ("a Horiba LabSpec .ngs file", "LabSpec: File > Save As > .txt"),
    ".spe": ("a Princeton Instruments .spe file", "LightField: Export > CSV"),
    ".sif": ("an Andor Solis .sif file", "Solis: File > Export As > ASCII"),
    ".jdx": ("a JCAMP-DX file", "a two-column text export"),
    ".dx": ("a JCAMP-DX file", "a two-column text export"),
}
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class TextSpectra:
    """What a text export held: spectra (N x C), their axis (C), the layout, and the map grid."""

    spectra: np.ndarray
    axis: np.ndarray
    format: str
    grid: tuple[int, int] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def unreadable(what: str, problem: str, looks_like: str) -> InvalidArgument:
    """The error for a file that cannot be read: what is wrong, what it looked like, what can be read."""
    return InvalidArgument(f"{what}: {problem}; it looks like {looks_like}. Readable spectra files: {SUPPORTED}",
                           field="input")


def binary_kind(data: bytes, suffix: str) -> tuple[str, str] | None:
    """(what it is, how to export it as text) for a recognisable binary file, else None."""
    for magic, kind, export in _BINARY_MAGIC:
        if data.startswith(magic):
            return kind, export
    return VENDOR_SUFFIXES.get(suffix)


def binary_error(what: str, data: bytes, suffix: str) -> InvalidArgument:
    kind, export = binary_kind(data, suffix) or ("a binary file", "")
    hint = f" Export it as text ({export})." if export else ""
    return InvalidArgument(f"{what} is not UTF-8 text: it looks like {kind}.{hint} Readable spectra files: "
                           f"{SUPPORTED}", field="input")


def to_text(data: bytes, what: str, suffix: str) -> str:
    """The file as text: UTF-8 (with or without BOM), UTF-16 with a BOM, else Latin-1 (LabSpec and
    WiRE write Windows code pages, e.g. ``cm-¹``); a binary file is refused, naming what it looks like."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise binary_error(what, data, suffix) from exc
    if b"\x00" in data[:65536] or binary_kind(data[:16], "") is not None:
        raise binary_error(what, data, suffix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# -- B&W Tek ---------------------------------------------------------------------------------


def _bwtek(lines: list[str], table: int, what: str) -> TextSpectra:
    meta = {}
    for line in lines[:table]:
        key, _, value = line.partition(";")
        meta[key.strip()] = value.strip().rstrip(";")
    header = [c.strip() for c in lines[table].split(";")]
    while header and not header[-1]:
        header.pop()
    looks = f"a B&W Tek text export ({meta.get('File Version', 'no File Version line')})"
    lower = [c.lower() for c in header]
    if "raman shift" not in lower:
        raise unreadable(what, "its table has no 'Raman Shift' column", looks)
    x_col = lower.index("raman shift")
    y_cols = [i for i, c in enumerate(lower) if c.startswith("dark subtracted")]
    signal = "Dark Subtracted"
    if not y_cols:
        y_cols, signal = [i for i, c in enumerate(lower) if c.startswith("raw data")], "Raw data"
    if not y_cols:
        raise unreadable(what, "its table has neither 'Dark Subtracted #k' nor 'Raw data #k' columns", looks)
    axis, rows = [], []
    for number, line in enumerate(lines[table + 1:], start=table + 2):
        if not line.strip():
            continue
        cells = [c.strip().replace(",", ".") for c in line.split(";")]
        if len(cells) < len(header):
            raise unreadable(what, f"line {number} has {len(cells)} cells, the table header {len(header)}", looks)
        if not cells[x_col]:
            continue  # a pixel outside the calibrated Raman range
        try:
            axis.append(float(cells[x_col]))
            rows.append([float(cells[i]) for i in y_cols])
        except ValueError as exc:
            raise unreadable(what, f"line {number} has a value that is not a number ({exc})", looks) from exc
    if len(axis) < 2:
        raise unreadable(what, "no pixel has a Raman shift (the export was saved without a Raman calibration)",
                         looks)
    version = meta.get("File Version", "B&W Tek")
    names = ", ".join(header[i] for i in y_cols)
    laser = meta.get("laser_wavelength", "").replace(",", ".")
    fmt = f"B&W Tek text export ({version}): Raman Shift axis, {names}" + (f"; laser {laser} nm" if laser else "")
    return TextSpectra(np.asarray(rows, dtype=np.float64).T.copy(), np.asarray(axis), fmt,
                       metadata={k: meta[k] for k in ("File Version", "laser_wavelength", "intigration times(ms)",
                                                      "model") if k in meta} | {"signal": signal})


# -- delimited tables ------------------------------------------------------------------------


def _delimiter(lines: list[str]) -> str | None:
    sample = "\n".join(lines[:50])
    for candidate in ("\t", ";", ","):
        if candidate in sample:
            return candidate
    return None


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
    while cells and cells[-1] == "":
        cells.pop()  # a trailing separator (WITec, Andor, B&W Tek)
    return cells


def _number(cell: str, decimal_comma: bool) -> float | None:
    """A cell as a number; None when empty; raises ValueError for text."""
    if cell == "":
        return None
    if decimal_comma:
        cell = cell.replace(",", ".")
    return float(cell)


def _is_numeric_row(cells: list[str], decimal_comma: bool) -> bool:
    try:
        values = [_number(c, decimal_comma) for c in cells]
    except ValueError:
        return False
    return any(v is not None for v in values)


def _strictly_monotonic(values: np.ndarray) -> bool:
    steps = np.diff(values)
    return values.size >= 2 and bool((steps > 0).all() or (steps < 0).all())


def raster_grid(positions: np.ndarray) -> tuple[int, int] | None:
    """(rows, columns) when the positions (N x 2, in file order) are a complete raster scan, else None.

    The coordinate that changes from the first spectrum to the second is the fast one (columns)."""
    n = len(positions)
    if n < 2 or positions.shape[1] != 2:
        return None
    fast = 0 if positions[1, 0] != positions[0, 0] else 1
    slow = 1 - fast
    width = int(np.argmax(positions[:, slow] != positions[0, slow])) or n
    if n % width:
        return None
    grid = positions.reshape(n // width, width, 2)
    if not ((grid[:, :, slow] == grid[:, :1, slow]).all() and (grid[:, :, fast] == grid[:1, :, fast]).all()):
        return None
    return n // width, width


def _long(table: np.ndarray, names: list[str], what: str, looks: str) -> TextSpectra:
    """Renishaw's long layout: position columns, then wave and intensity, one line per channel."""
    positions = table[:, :-2]
    wave, intensity = table[:, -2], table[:, -1]
    change = np.flatnonzero((np.diff(positions, axis=0) != 0).any(axis=1)) + 1
    starts = np.concatenate([[0], change])
    sizes = np.diff(np.concatenate([starts, [len(table)]]))
    if (sizes != sizes[0]).any():
        raise unreadable(what, f"its spectra have different lengths ({sizes.min()} to {sizes.max()} lines)", looks)
    channels = int(sizes[0])
    axis = wave[:channels]
    waves = wave.reshape(-1, channels)
    if not np.allclose(waves, axis[None, :], rtol=0, atol=1e-6 * max(1.0, float(np.abs(axis).max()))):
        raise unreadable(what, "its spectra are on different wave axes", looks)
    spectra = intensity.reshape(-1, channels)
    grid = raster_grid(positions[starts]) if positions.shape[1] == 2 else None
    cols = ", ".join(names) if names else f"{positions.shape[1]} position column(s), wave, intensity"
    return TextSpectra(spectra, axis, f"Renishaw WiRE text export (long: {cols})", grid)


def _looks_long(table: np.ndarray) -> bool:
    """Leading columns constant over runs of >= 2 lines while the next-to-last column varies within them."""
    lead = table[:, :-2]
    same = (np.diff(lead, axis=0) == 0).all(axis=1)
    return bool(same.mean() > 0.5 and (np.diff(table[:, -2])[same] != 0).all())


#: most lines of text before a table's numbers
_MAX_HEADER = 3


def _numbers_in_c(lines: list[str], delimiter: str | None, decimal_comma: bool, width: int) -> np.ndarray | None:
    """The data lines as one array by numpy's C reader when they are plain numbers, ``width`` to a line;
    None otherwise (empty cells, text, ragged rows), for the cell-by-cell reader. The difference is the
    gateway's CPU: a Python ``float()`` per cell held the interpreter lock for most of an analysis."""
    text = "\n".join(lines)
    if decimal_comma:  # only with a separator other than ","
        text = text.replace(",", ".")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None,
                           quotechar='"')
    except ValueError:
        return None
    return table if table.shape == (len(lines), width) else None


def _tables(lines: list[str], what: str) -> TextSpectra:
    comments = [ln.strip() for ln in lines if ln.lstrip().startswith("#")]
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise InvalidArgument(f"{what} holds no data rows", field="input")
    delimiter = _delimiter(body)
    decimal_comma = delimiter in ("\t", ";", None) and any(
        _DECIMAL_COMMA.match(c) for ln in body[:200] for c in _split(ln, delimiter))
    # Header lines: text before the first numeric row (a CSV header, WITec's names and units lines).
    rows = [_split(ln, delimiter) for ln in body[:_MAX_HEADER + 1]]
    first = next((i for i, r in enumerate(rows) if _is_numeric_row(r, decimal_comma)), None)
    table = None if first is None else _numbers_in_c(body[first:], delimiter, decimal_comma, len(rows[first]))
    if table is None:  # cell by cell, for the messages that name the line at fault
        rows = [_split(ln, delimiter) for ln in body]
        first = next((i for i, r in enumerate(rows) if _is_numeric_row(r, decimal_comma)), None)
    header = rows[:first] if first is not None else rows[:1]
    data = rows[first:] if first is not None else rows[1:]
    comment_names = [c.lstrip("#").strip() for c in re.split(r"\t+", comments[-1])] if comments else []
    renishaw_header = [c for c in (comments[-1].split() if comments else []) if c.startswith("#")]
    metadata_lines = [c for c in comments if "=" in c]
    looks = _guess(delimiter, header, renishaw_header, metadata_lines, rows)
    if not data:
        raise InvalidArgument(f"{what} has a header but no data rows", field="input")
    if len(header) > _MAX_HEADER:
        raise unreadable(what, f"{len(header)} lines of text before the numbers", looks)
    if table is None:
        # Cells -> numbers (None for empty cells, kept: LabSpec's wide layout starts with empty cells).
        parsed = []
        for number, r in enumerate(data, start=len(header) + 1):
            try:
                parsed.append([_number(c, decimal_comma) for c in r])
            except ValueError as exc:
                raise unreadable(what, f"line {number} has a value that is not a number ({exc})", looks) from exc
        lead = 0
        while lead < len(parsed[0]) and parsed[0][lead] is None:
            lead += 1
        if lead in (1, 2) and not header and len(parsed) >= 2:
            return _labspec_wide(parsed, lead, what)
        widths = {len(r) for r in parsed}
        if len(widths) != 1:
            line = next(i for i, r in enumerate(parsed, start=len(header) + 1) if len(r) != len(parsed[0]))
            raise unreadable(what, f"rows have different numbers of columns (first odd one: data line {line})", looks)
        if any(v is None for r in parsed for v in r):
            line = next(i for i, r in enumerate(parsed, start=len(header) + 1) if None in r)
            raise unreadable(what, f"data line {line} has an empty cell", looks)
        table = np.asarray(parsed, dtype=np.float64)
    if not np.isfinite(table).all():
        raise InvalidArgument(f"{what} contains NaN or Inf", field="input")
    width = table.shape[1]
    if width == 1:
        raise unreadable(what, "one column of numbers has no axis (a WITec Graph ASCII '(Y-Axis)' file needs its "
                         "'(X-Axis)' file: export as Table instead)", looks)
    if width == 2:
        fmt = {"a Renishaw WiRE text export": "Renishaw WiRE text export (Wave, Intensity)",
               "a Horiba LabSpec text export": "Horiba LabSpec text export (two columns)"}
        return TextSpectra(table[:, 1][None, :], table[:, 0], fmt.get(looks, "two-column text (x, intensity)"),
                           metadata={"header": "; ".join(metadata_lines)[:500]} if metadata_lines else {})
    names = [n for n in comment_names if n]
    named_long = len(names) == width and [n.lower() for n in names[-2:]] == ["wave", "intensity"]
    if named_long or (not header and width in (3, 4) and _looks_long(table)):
        return _long(table, names if named_long else [], what, "a Renishaw WiRE long text export")
    first_col, first_row = table[:, 0], table[0]
    if len(table) > width and _strictly_monotonic(first_col) and not _strictly_monotonic(first_row[1:]):
        fmt = "WITec Project Table export (first column the axis, one spectrum per column)" if header or \
            delimiter == "\t" else "column table (first column the axis, one spectrum per column)"
        return TextSpectra(table[:, 1:].T.copy(), first_col, fmt)
    if header:
        raise unreadable(what, f"a multi-spectrum CSV needs the x axis (numbers) as its first row, found text "
                         f"{header[0][:3]}", looks)
    if len(table) < 2:
        raise unreadable(what, f"one row of {width} numbers is neither a two-column spectrum nor a matrix with "
                         "an axis row", looks)
    return TextSpectra(table[1:], table[0], "CSV matrix (first row the axis, one spectrum per row)")


def _labspec_wide(parsed: list[list[float | None]], lead: int, what: str) -> TextSpectra:
    looks = "a Horiba LabSpec wide text export (" + ("map: X, Y" if lead == 2 else "series: time") + " columns)"
    axis = parsed[0][lead:]
    if any(v is None for v in axis):
        raise unreadable(what, "its axis row has empty cells", looks)
    width = lead + len(axis)
    for number, r in enumerate(parsed[1:], start=2):
        if len(r) != width or any(v is None for v in r):
            raise unreadable(what, f"data line {number} has {len(r)} cells (or empty ones), the axis row "
                             f"{lead} position(s) + {len(axis)} channels", looks)
    table = np.asarray(parsed[1:], dtype=np.float64)
    if not np.isfinite(table).all():
        raise InvalidArgument(f"{what} contains NaN or Inf", field="input")
    grid = raster_grid(table[:, :2]) if lead == 2 else None
    return TextSpectra(table[:, lead:], np.asarray(axis, dtype=np.float64), looks.replace("a Horiba", "Horiba"),
                       grid)


def _guess(delimiter: str | None, header: list[list[str]], renishaw: list[str], metadata: list[str],
           rows: list[list[str]]) -> str:
    """What a table looks like, for the messages."""
    if renishaw and renishaw[-1].lower() == "#intensity":
        return "a Renishaw WiRE text export"
    if metadata:
        return "a Horiba LabSpec text export"
    if header and any("1/cm" in c or "cts" in c.lower() for r in header for c in r):
        return "a WITec Project Table export"
    if rows and rows[0] and rows[0][0] == "" and delimiter == "\t":
        return "a Horiba LabSpec wide text export"
    names = {"\t": "tab", ";": "semicolon", ",": "comma", None: "space"}
    return f"a {names[delimiter]}-separated table"


def read_text_spectra(data: bytes, what: str, suffix: str = "") -> TextSpectra:
    """Spectra from a text export of any layout this module reads.

    Parameters
    ----------
    data : bytes
        The whole file.
    what : str
        How the file is named in messages, e.g. ``input 'a.txt'``.
    suffix : str, optional
        The file's extension (lower case), to name vendor binary files.

    Returns
    -------
    TextSpectra
        Spectra (N x C), axis (C,), the layout read, and the (rows, columns) grid of a complete raster map.

    Raises
    ------
    InvalidArgument
        With field ``input``, naming the problem, the layout the file looked like and the layouts read.
    """
    text = to_text(data, what, suffix)
    lines = text.splitlines()
    head = lines[:400]
    table = next((i for i, ln in enumerate(head) if ln.lstrip().lower().startswith("pixel;")), None)
    if (lines and lines[0].startswith("File Version;BW")) or (
            table is not None and "raman shift" in head[table].lower()):
        if table is None:
            raise unreadable(what, "no 'Pixel;...' table header in its first 400 lines", "a B&W Tek text export")
        return _bwtek(lines, table, what)
    return _tables(lines, what)
