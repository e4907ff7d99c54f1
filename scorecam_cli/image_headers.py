"""Image sizes from file headers alone, for the formats OpenCV decodes: no pixel is decoded.

:func:`image_size` reads (H, W) from the first bytes of a file: PNG (IHDR), JPEG (the first
start-of-frame), WebP (VP8, VP8L, VP8X), AVIF (the largest ``ispe``), TIFF and BigTIFF (the first
directory, which OpenCV decodes), BMP, GIF (the logical screen), PNM / PAM / PFM, Sun raster,
JPEG 2000 (JP2 ``ihdr`` or a bare codestream's SIZ) and Radiance HDR. Anything else, or a header
cut short or malformed, gives None: such a file is refused, never decoded to find out. These are
our own small readers, because Pillow's header parsing raises ``DecompressionBombError`` for
exactly the files a size check is for (past ~179 Mpx) and cannot parse float TIFF, PFM, PAM or
HDR headers (numpy-free, torch-free).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator

FORMATS = "PNG, JPEG, WebP, AVIF, TIFF, BMP, GIF, PNM, Sun raster, JPEG 2000 or Radiance HDR"

Size = tuple[int, int]  # (H, W)


def image_size(data: bytes) -> Size | None:
    """(H, W) from the header of the file whose first bytes are ``data``; None if unknown."""
    for accepts, read in _READERS:
        if accepts(data):
            try:
                size = read(data)
            except (struct.error, IndexError, ValueError):
                return None
            return size if size is not None and size[0] > 0 and size[1] > 0 else None
    return None


def _png(data: bytes) -> Size | None:
    if data[12:16] != b"IHDR":  # the first chunk, always
        return None
    width, height = struct.unpack(">II", data[16:24])
    return height, width


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers
_FILL = re.compile(rb"\xff+")
MAX_SEGMENTS = 10_000  # JPEG markers, boxes or TIFF entries read: real files have tens


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, its offset, the offset after its segment) of the JPEG markers from the start of
    the file to the first scan or the end of image (included); segments are skipped by their
    length, fill bytes at once. Stops at anything that is no marker, and after MAX_SEGMENTS (a
    file of nothing but tiny segments)."""
    pos = 2
    for _ in range(MAX_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return
        fill = _FILL.match(data, pos)
        pos = fill.end() - 1 if fill is not None else pos  # the last 0xFF before the marker
        if pos + 4 > len(data):
            return
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD9 or marker in (0x01, 0xDA):  # no length of their own
            after = pos + 2
        else:
            after = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield marker, pos, after
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            return
        pos = after


def _jpeg(data: bytes) -> Size | None:
    """The first frame header, before the first scan."""
    for marker, pos, _ in jpeg_segments(data):
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return height, width
    return None


def _webp(data: bytes) -> Size | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 3-byte frame tag, start code 9d 01 2a, 14-bit sides
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 0x2f, then 14 bits each of width - 1, height - 1
        if data[20] != 0x2F:
            return None
        bits = struct.unpack("<I", data[21:25])[0]
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24 bits each of canvas width - 1, height - 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return height, width
    return None


def _tiff(data: bytes) -> Size | None:
    """ImageWidth (256) and ImageLength (257) of the first image file directory."""
    order = "<" if data[:2] == b"II" else ">"
    if data[2:4] in (b"*\0", b"\0*"):  # classic TIFF: 12-byte entries, value at 8
        offset = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[offset : offset + 2])[0]
        first, entry, value_at = offset + 2, 12, 8
    else:  # BigTIFF: 20-byte entries, value at 12
        offset = struct.unpack(order + "Q", data[8:16])[0]
        count = struct.unpack(order + "Q", data[offset : offset + 8])[0]
        first, entry, value_at = offset + 8, 20, 12
    sides: dict[int, int] = {}
    for at in range(first, first + entry * min(count, MAX_SEGMENTS), entry):
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            form = {3: "H", 4: "I", 16: "Q"}.get(kind)  # SHORT, LONG, LONG8
            if form is None:
                return None
            start = at + value_at
            sides[tag] = struct.unpack(order + form, data[start : start + struct.calcsize(form)])[0]
            if len(sides) == 2:
                return sides[257], sides[256]
    return None


def _bmp(data: bytes) -> Size | None:
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    else:  # BITMAPINFOHEADER and later: signed 32-bit, negative height for top-down rows
        width, height = struct.unpack("<ii", data[18:26])
    return abs(height), abs(width)


def _gif(data: bytes) -> Size | None:
    width, height = struct.unpack("<HH", data[6:10])
    return height, width


_PNM_SIDES = re.compile(rb"\s+([0-9]{1,10})\s+([0-9]{1,10})\s")
_PAM_SIDE = re.compile(rb"\n(WIDTH|HEIGHT)[ \t]+([0-9]{1,10})(?=\s)")


def _netpbm(data: bytes) -> Size | None:
    """P1-P6 and PFM (Pf, PF): width and height after the magic, '#' comments allowed;
    PAM (P7): its WIDTH and HEIGHT lines."""
    head = data[:4096]
    if head[1:2] == b"7":
        sides = {key: int(value) for key, value in _PAM_SIDE.findall(head)}
        return (sides[b"HEIGHT"], sides[b"WIDTH"]) if len(sides) == 2 else None
    found = _PNM_SIDES.match(re.sub(rb"#[^\n]*", b" ", head[2:]))
    return (int(found[2]), int(found[1])) if found else None


def _sun(data: bytes) -> Size | None:
    width, height = struct.unpack(">II", data[4:12])
    return height, width


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """ISO base media boxes in ``data[start:end]`` (JPEG 2000, AVIF): (type, payload, end)."""
    for _ in range(MAX_SEGMENTS):
        if start + 8 > end:
            return
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1:  # a 64-bit size follows
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:  # to the end
            size = end - start
        if size < header:
            return
        yield kind, start + header, min(start + size, end)
        start += size


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload, end) of the first box of type ``kind`` in ``data[start:end]``, if any."""
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def _jpeg2000(data: bytes) -> Size | None:
    if data.startswith(b"\xff\x4f\xff\x51"):  # a bare codestream: SIZ, less the image offset
        width, height, left, top = struct.unpack(">IIII", data[8:24])
        return height - top, width - left
    header = _box(data, 0, len(data), b"jp2h")
    image = header and _box(data, *header, b"ihdr")
    if not image:
        return None
    height, width = struct.unpack(">II", data[image[0] : image[0] + 8])
    return height, width


def _avif(data: bytes) -> Size | None:
    """The largest image spatial extent (``ispe``) of the item properties: the primary image's
    or a grid's whole canvas (thumbnails and tiles are smaller)."""
    meta = _box(data, 0, len(data), b"meta")  # a full box: 4 bytes of version and flags
    properties = meta and _box(data, meta[0] + 4, meta[1], b"iprp")
    container = properties and _box(data, *properties, b"ipco")
    if not container:
        return None
    sizes = [
        struct.unpack(">II", data[start + 4 : start + 12])
        for kind, start, _ in _boxes(data, *container)
        if kind == b"ispe"
    ]
    if not sizes:
        return None
    width, height = max(sizes, key=lambda side: side[0] * side[1])
    return height, width


_HDR_SIDES = re.compile(rb"\n\n[-+]([XY]) ([0-9]{1,10}) [-+][XY] ([0-9]{1,10})\n")


def _radiance(data: bytes) -> Size | None:
    """The resolution line after the header's blank line: ``-Y H +X W`` (or X first)."""
    found = _HDR_SIDES.search(data[:65536])
    if not found:
        return None
    first, second = int(found[2]), int(found[3])
    return (first, second) if found[1] == b"Y" else (second, first)


def _is_avif(data: bytes) -> bool:
    if data[4:8] != b"ftyp":
        return False
    box_end = min(struct.unpack(">I", data[:4])[0], 256)
    brands = [data[at : at + 4] for at in range(8, box_end, 4)]
    return bool({b"avif", b"avis"} & set(brands))


_READERS: tuple[tuple[Callable[[bytes], bool], Callable[[bytes], Size | None]], ...] = (
    (lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"), _png),
    (lambda d: d.startswith(b"\xff\xd8"), _jpeg),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
    (_is_avif, _avif),
    (lambda d: d[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    (lambda d: d.startswith(b"BM"), _bmp),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    (lambda d: re.match(rb"P[1-7fF]\s", d) is not None, _netpbm),
    (lambda d: d.startswith(b"\x59\xa6\x6a\x95"), _sun),
    (lambda d: d.startswith((b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")), _jpeg2000),
    (lambda d: d.startswith((b"#?RADIANCE\n", b"#?RGBE\n")), _radiance),
)
