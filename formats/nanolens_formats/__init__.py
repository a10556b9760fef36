"""The file formats NanoLens reads, shared by the gateway's adapters, the CLI and the benchmarks.

``images`` (micrographs and their pixel size, detector and polarity from TIFF, DM, PNG/JPEG/BMP),
``instrument`` (a micrograph's magnification and acquisition date), ``spectra`` and
``spectra_text`` (spectra as arrays and as instruments' text exports), ``movies`` (liquid-cell
movies as frame iterators). A reader refuses what it cannot read with
INVALID_ARGUMENT naming the input. Their code is part of the identity of every result they decode
(``nanolens_gateway.identity``): a fixed reader never serves the answers of the broken one.
"""
