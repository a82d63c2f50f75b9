"""JPEG, WebP and PNG files carrying A1111 parameters in EXIF, written as A1111 v1.10.1 writes them.

`modules/images.py` `save_image_with_geninfo`: Pillow saves the image (JPEG quality 80, WebP lossy
quality 80), then `piexif.insert(piexif.dump({"Exif": {UserComment: UserComment.dump(text,
encoding="unicode")}}), filename)`. Also a few files other tools write (an ASCII UserComment, a
JPEG comment, a PNG with both a `parameters` chunk and an `eXIf` chunk), and `expected.json`: what
A1111's `read_info_from_image` returns for each file (run here on the files, with Pillow + piexif).

With `--check DIR`, reads every `*.jpg`/`*.webp`/`*.png` in DIR the same way and prints the text
(used once on Sumi's own outputs, whose texts the Rust tests pin).

Usage: python make_exif_fixtures.py fixtures/exif
       python make_exif_fixtures.py --check DIR
"""

import io
import json
import os
import sys

import piexif
import piexif.helper
from PIL import Image

IGNORED_INFO_KEYS = {
    'jfif', 'jfif_version', 'jfif_unit', 'jfif_density', 'dpi', 'exif',
    'loop', 'background', 'timestamp', 'duration', 'progressive', 'progression',
    'icc_profile', 'chromaticity', 'photoshop',
}


def read_info_from_image(image):
    """A1111 v1.10.1 modules/images.py read_info_from_image, less the NovelAI branch."""
    items = (image.info or {}).copy()
    geninfo = items.pop('parameters', None)
    if "exif" in items:
        exif_data = items["exif"]
        try:
            exif = piexif.load(exif_data)
        except OSError:
            exif = None
        exif_comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b'')
        try:
            exif_comment = piexif.helper.UserComment.load(exif_comment)
        except ValueError:
            exif_comment = exif_comment.decode('utf8', errors="ignore")
        if exif_comment:
            geninfo = exif_comment
    elif "comment" in items:
        if isinstance(items["comment"], bytes):
            geninfo = items["comment"].decode('utf8', errors="ignore")
        else:
            geninfo = items["comment"]
    return geninfo


def a1111_exif(text):
    return piexif.dump({"Exif": {
        piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text or "", encoding="unicode")}})


def picture():
    im = Image.new("RGB", (24, 16))
    im.putdata([(x * 10, y * 15, (x * y) % 256) for y in range(16) for x in range(24)])
    return im


SHORT = ("a photo of a cat, (masterpiece:1.2), 猫 café — 🎨\n"
         "Negative prompt: blurry, ugly\n"
         "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
         "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def long_text():
    words = ["masterpiece", "best quality", "ultra-detailed", "日本庭園", "Ölgemälde", "🌸"]
    prompt = ", ".join(f"({w}:{1 + i % 7 / 10:.1f})" for i, w in
                       zip(range(1500), words * 250))
    return prompt + "\nNegative prompt: lowres\nSteps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 600x400"


def save(path, im, fmt, text, **kw):
    im.save(path, format=fmt, quality=80, lossless=False, **kw)
    if text is not None:
        piexif.insert(a1111_exif(text), path)


def make(out):
    os.makedirs(out, exist_ok=True)
    im = picture()
    save(f"{out}/a1111_short.jpg", im, "JPEG", SHORT)
    save(f"{out}/a1111_short.webp", im, "WEBP", SHORT)
    save(f"{out}/a1111_long.webp", im, "WEBP", long_text())
    save(f"{out}/a1111_long.jpg", im, "JPEG", long_text()[:32000])
    # other writers: an ASCII UserComment, an undefined prefix, a JPEG comment, PNG eXIf + text
    ascii_exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment:
                                       piexif.helper.UserComment.dump("Steps: 5, Seed: 7", "ascii")}})
    im.save(f"{out}/ascii_comment.jpg", format="JPEG", quality=80)
    piexif.insert(ascii_exif, f"{out}/ascii_comment.jpg")
    undefined = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: b"\0" * 8 + "Steps: 9 é".encode()}})
    im.save(f"{out}/undefined_prefix.jpg", format="JPEG", quality=80)
    piexif.insert(undefined, f"{out}/undefined_prefix.jpg")
    im.save(f"{out}/com_segment.jpg", format="JPEG", quality=80, comment="Steps: 3, Seed: 11")
    im.save(f"{out}/no_parameters.jpg", format="JPEG", quality=80)
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 1 (the PNG text, overridden by EXIF)")
    im.save(f"{out}/exif_over_text.png", format="PNG", pnginfo=info, exif=a1111_exif(SHORT))
    expected = {name: read_info_from_image(Image.open(f"{out}/{name}"))
                for name in sorted(os.listdir(out)) if name != "expected.json"}
    with open(f"{out}/expected.json", "w", encoding="utf8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
    for k, v in expected.items():
        print(k, os.path.getsize(f"{out}/{k}"), "bytes,", None if v is None else f"{len(v)} chars")


def check(d):
    for name in sorted(os.listdir(d)):
        if name.rsplit(".", 1)[-1] in ("jpg", "jpeg", "webp", "png"):
            im = Image.open(f"{d}/{name}")
            im.load()
            print(json.dumps({"file": name, "format": im.format, "size": im.size,
                              "text": read_info_from_image(im)}, ensure_ascii=False))


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        make(sys.argv[1])
