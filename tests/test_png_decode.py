"""libspng decodes the PNGs it is given to exactly Pillow's pixels, and leaves the rest to Pillow.

`serving.decode.load_image` sends a still, non-interlaced 8-bit RGB or RGBA PNG without a
transparent colour or EXIF (the page's canvas, most screenshots and drawings) to libspng, three
times faster than Pillow's decoder. Every such picture must come out pixel for pixel and mode for
mode as Pillow decodes it (an opaque RGBA picture as RGBX: the same colours, its alpha all 255),
and give `to_mnist` the same 28×28 image; every other PNG must not take that path.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.page_canvas import PAGE_CANVAS
from mnist_core.imaging import EmptyImageError, to_mnist
from serving.decode import UploadError, _libspng_decodes, decode_image, load_image, open_image
from tests.conftest import SEED_IMAGES

MAX_PIXELS = 25_000_000


def png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def pillow_pixels(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def canvas(seed: int, side: int, mode: str) -> Image.Image:
    rng = np.random.default_rng(seed)
    picture = Image.new(mode, (side, side), "white")
    points = [tuple(int(v) for v in rng.integers(side // 8, side - side // 8, 2)) for _ in range(4)]
    colour = tuple(int(v) for v in rng.integers(0, 200, len(mode)))
    ImageDraw.Draw(picture).line(points, fill=colour, width=max(1, side // 15), joint="curve")
    return picture


def libspng_cases() -> list[tuple[str, bytes]]:
    cases = []
    for seed, side in enumerate((1, 28, 280, 517, 1023)):
        for mode in ("RGB", "RGBA"):
            picture = canvas(seed, side, mode)
            cases.append((f"{mode}-{side}", png(picture)))
            # other zlib levels and Pillow's filter search give other streams of the same pixels
            cases.append((f"{mode}-{side}-level0", png(picture, compress_level=0)))
            cases.append((f"{mode}-{side}-optimized", png(picture, optimize=True)))
    noise = np.random.default_rng(7).integers(0, 256, (97, 131, 4), dtype=np.uint8)
    cases.append(("RGBA-noise-translucent", png(Image.fromarray(noise))))
    cases.append(("RGB-noise", png(Image.fromarray(noise[..., :3]))))
    for path in [PAGE_CANVAS, *sorted(SEED_IMAGES.glob("*.png"))]:
        cases.append((path.name, path.read_bytes()))
    return [
        (name, data) for name, data in cases if _libspng_decodes(open_image(data, MAX_PIXELS), data)
    ]


def mnist_or_blank(image: Image.Image) -> np.ndarray | None:
    """`to_mnist`'s picture, or None where it finds no digit (a one-pixel PNG)."""
    try:
        return to_mnist(image)
    except EmptyImageError:
        return None


@pytest.mark.parametrize(("name", "data"), libspng_cases(), ids=[n for n, _ in libspng_cases()])
def test_libspng_gives_pillows_pixels(name: str, data: bytes) -> None:
    expected = pillow_pixels(data)
    decoded = decode_image(data, MAX_PIXELS)
    assert decoded.size == expected.size
    if decoded.mode == "RGBX":  # opaque RGBA: the alpha Pillow read must be 255 everywhere
        assert expected.mode == "RGBA", name
        assert expected.getchannel("A").getextrema() == (255, 255), name
        np.testing.assert_array_equal(
            np.asarray(decoded)[..., :3], np.asarray(expected)[..., :3], err_msg=name
        )
    else:
        assert decoded.mode == expected.mode
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(expected), err_msg=name)
    np.testing.assert_array_equal(mnist_or_blank(decoded), mnist_or_blank(expected), err_msg=name)


def test_an_opaque_rgba_png_comes_out_rgbx_and_a_translucent_one_rgba() -> None:
    opaque = decode_image(PAGE_CANVAS.read_bytes(), MAX_PIXELS)
    assert opaque.mode == "RGBX"
    translucent = canvas(3, 60, "RGBA")
    translucent.putpixel((0, 0), (255, 255, 255, 254))  # one pixel is enough
    assert decode_image(png(translucent), MAX_PIXELS).mode == "RGBA"


def test_the_pages_canvas_takes_the_fast_path_and_the_paint_pictures_do_not() -> None:
    names = {name for name, _ in libspng_cases()}
    assert {"RGBA-280", "RGB-280", "RGBA-noise-translucent", PAGE_CANVAS.name} <= names
    assert not any(name.startswith("num_") for name in names)  # Paint wrote XMP into them


def sixteen_bit_rgb(height: int = 20, width: int = 30) -> bytes:
    """A 16-bit RGB PNG, written by hand: Pillow cannot save one."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = np.random.default_rng(0).integers(0, 65536, (height, width * 3), dtype=np.uint16)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def animated() -> bytes:
    frames = [canvas(seed, 40, "RGBA") for seed in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def with_xmp_orientation() -> bytes:
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    return png(canvas(3, 60, "RGB"), pnginfo=info)


def with_exif_orientation() -> bytes:
    picture = canvas(3, 60, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow turns the picture upright, libspng would not know
    return png(picture, exif=exif)


PILLOW_CASES = {
    "16-bit RGB": sixteen_bit_rgb,
    "transparent colour": lambda: png(canvas(1, 50, "RGB"), transparency=(255, 255, 255)),
    "palette": lambda: png(canvas(1, 50, "RGB").convert("P")),
    "grey": lambda: png(canvas(1, 50, "L")),
    "grey with alpha": lambda: png(canvas(1, 50, "LA")),
    "animated": animated,
    "EXIF orientation": with_exif_orientation,
    "XMP orientation": with_xmp_orientation,
}


@pytest.mark.parametrize("name", PILLOW_CASES)
def test_other_pngs_are_left_to_pillow(name: str) -> None:
    data = PILLOW_CASES[name]()
    image = open_image(data, MAX_PIXELS)
    assert not _libspng_decodes(image, data), name
    expected = pillow_pixels(data)
    decoded = load_image(image, data, libspng=True)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(expected))


def test_without_libspng_pillow_decodes_the_canvas() -> None:
    data = png(canvas(0, 280, "RGBA"))
    image = open_image(data, MAX_PIXELS)
    assert _libspng_decodes(image, data)
    np.testing.assert_array_equal(
        np.asarray(load_image(image, data)), np.asarray(pillow_pixels(data))
    )


def test_a_truncated_canvas_that_libspng_refuses_is_pillows_sentence() -> None:
    data = png(canvas(0, 280, "RGBA"), compress_level=0)
    image = open_image(data[: len(data) // 2], MAX_PIXELS)
    assert _libspng_decodes(image, data[: len(data) // 2])
    with pytest.raises(UploadError) as refused:
        load_image(image, data[: len(data) // 2], libspng=True)
    assert refused.value.status_code == 422
    assert "corrupt or truncated" in refused.value.detail
