//! A1111's parameters in EXIF: the `UserComment` tag of the Exif IFD, written and read as A1111
//! v1.10.1 does with piexif 1.1.3.
//!
//! Writing (`modules/images.py`, `save_image_with_geninfo` for `.jpg`/`.jpeg`/`.webp`):
//! `piexif.dump({"Exif": {ExifIFD.UserComment: piexif.helper.UserComment.dump(geninfo,
//! encoding="unicode")}})`. `UserComment.dump` is the 8-byte prefix `UNICODE\0` and the text in
//! UTF-16 **big-endian** (piexif's `_UNICODE = 'utf_16_be'`, whatever the TIFF byte order), and
//! `piexif.dump` lays it out big-endian (`MM`): IFD0 with one entry (the Exif IFD pointer, tag
//! 0x8769, LONG), no IFD1, then the Exif IFD with one entry (tag 0x9286, UNDEFINED) and, as
//! piexif writes it, no next-IFD offset, then the value. [`dump_user_comment`] writes the same
//! bytes, `Exif\0\0` header included.
//!
//! Reading (`read_info_from_image`): Pillow's `info["exif"]` goes through `piexif.load` (which
//! takes the bytes after an `Exif\0\0` header, or a bare TIFF block, and gives up on anything
//! else); the Exif IFD's `UserComment` (empty when absent) goes through
//! `piexif.helper.UserComment.load`: `ASCII\0\0\0` → ASCII, `JIS\0\0\0\0\0` → Shift_JIS,
//! `UNICODE\0` → UTF-16BE, each with errors replaced by U+FFFD; any other prefix, or fewer than 8
//! bytes, raises `ValueError`, upon which A1111 decodes the whole value (prefix included) as
//! UTF-8 dropping invalid bytes ([`decode_user_comment`]). An empty result means "no
//! parameters". Every offset and count read from the file is checked against the block's length.

/// `UserComment` (Exif IFD tag 0x9286).
const USER_COMMENT: u16 = 0x9286;
/// The Exif IFD pointer (IFD0 tag 0x8769).
const EXIF_IFD: u16 = 0x8769;
/// The APP1/RIFF header that precedes the TIFF block.
pub const EXIF_HEADER: &[u8; 6] = b"Exif\0\0";
/// Most IFD entries looked at (piexif reads them all; a real IFD holds tens).
const MAX_ENTRIES: usize = 4096;

const ASCII_PREFIX: &[u8; 8] = b"ASCII\0\0\0";
const JIS_PREFIX: &[u8; 8] = b"JIS\0\0\0\0\0";
const UNICODE_PREFIX: &[u8; 8] = b"UNICODE\0";

/// `piexif.dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})`: the EXIF
/// block A1111 puts in its JPEG and WebP files, starting with `Exif\0\0`.
pub fn dump_user_comment(text: &str) -> Vec<u8> {
    let mut value = UNICODE_PREFIX.to_vec();
    for unit in text.encode_utf16() {
        value.extend_from_slice(&unit.to_be_bytes());
    }
    // TIFF header (8) + IFD0 (2 + 12 + 4) = 26: the Exif IFD; + (2 + 12) = 40: the value.
    let mut out = EXIF_HEADER.to_vec();
    out.extend_from_slice(b"MM\0\x2a");
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    push_entry(&mut out, EXIF_IFD, 4, 1, 26);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    // A UNDEFINED value of more than 4 bytes (the prefix alone is 8) lives at an offset.
    let count = u32::try_from(value.len()).unwrap_or(u32::MAX);
    push_entry(&mut out, USER_COMMENT, 7, count, 40);
    out.extend_from_slice(&value);
    out
}

fn push_entry(out: &mut Vec<u8>, tag: u16, ty: u16, count: u32, value: u32) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

/// The parameters an EXIF block carries, as A1111's `read_info_from_image` finds them: `None`
/// when piexif would not load the block, when it has no `UserComment`, or when the comment
/// decodes to nothing. `block` is Pillow's `info["exif"]`: `Exif\0\0` and a TIFF block, or a bare
/// TIFF block. A malformed TIFF structure is an error naming what is wrong.
pub fn parameters(block: &[u8]) -> Result<Option<String>, String> {
    let tiff = match block.strip_prefix(b"Exif".as_slice()) {
        Some(rest) => rest.get(2..).unwrap_or_default(),
        None => block,
    };
    if !(tiff.starts_with(b"II*\0") || tiff.starts_with(b"MM\0*")) {
        return Ok(None);
    }
    let comment = user_comment(tiff)?.unwrap_or_default();
    let text = decode_user_comment(comment);
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// Byte order of a TIFF block.
#[derive(Clone, Copy)]
struct Tiff<'a> {
    data: &'a [u8],
    big: bool,
}

impl<'a> Tiff<'a> {
    fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8], String> {
        at.checked_add(n)
            .and_then(|end| self.data.get(at..end))
            .ok_or_else(|| format!("EXIF: {n} bytes at offset {at} lie past the block's end"))
    }
    fn u16(&self, at: usize) -> Result<u16, String> {
        let b = self.bytes(at, 2)?;
        let b = [b[0], b[1]];
        Ok(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
    fn u32(&self, at: usize) -> Result<u32, String> {
        let b = self.bytes(at, 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    /// The entry of `tag` in the IFD at `ifd`: `(type, count, offset of the value field)`.
    fn find(&self, ifd: usize, tag: u16) -> Result<Option<(u16, u32, usize)>, String> {
        let n = usize::from(self.u16(ifd)?);
        if n > MAX_ENTRIES {
            return Err(format!("EXIF: an IFD of {n} entries (limit {MAX_ENTRIES})"));
        }
        for i in 0..n {
            let at = ifd + 2 + 12 * i;
            if self.u16(at)? == tag {
                return Ok(Some((self.u16(at + 2)?, self.u32(at + 4)?, at + 8)));
            }
        }
        Ok(None)
    }
}

/// Size in bytes of one value of TIFF type `ty` (piexif's `TYPES`); unknown types count as 1.
fn type_size(ty: u16) -> usize {
    match ty {
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 => 8,
        _ => 1,
    }
}

/// The raw `UserComment` value of a TIFF block, `None` when there is no Exif IFD or no comment.
fn user_comment(data: &[u8]) -> Result<Option<&[u8]>, String> {
    let t = Tiff {
        data,
        big: data.starts_with(b"MM"),
    };
    let ifd0 = t.u32(4)? as usize;
    let Some((_, _, value)) = t.find(ifd0, EXIF_IFD)? else {
        return Ok(None);
    };
    let exif_ifd = t.u32(value)? as usize;
    let Some((ty, count, value)) = t.find(exif_ifd, USER_COMMENT)? else {
        return Ok(None);
    };
    let len = (count as usize)
        .checked_mul(type_size(ty))
        .ok_or("EXIF: a UserComment size that overflows")?;
    let at = if len <= 4 {
        value
    } else {
        t.u32(value)? as usize
    };
    t.bytes(at, len).map(Some)
}

/// `piexif.helper.UserComment.load(value)`, and A1111's fallback when it raises: the value
/// decoded as UTF-8 with invalid bytes dropped.
pub fn decode_user_comment(value: &[u8]) -> String {
    let (prefix, body) = value.split_at(value.len().min(8));
    match <&[u8; 8]>::try_from(prefix) {
        Ok(p) if p == ASCII_PREFIX => body
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    char::from(b)
                } else {
                    '\u{fffd}'
                }
            })
            .collect(),
        Ok(p) if p == JIS_PREFIX => encoding_rs::SHIFT_JIS
            .decode_without_bom_handling(body)
            .0
            .into_owned(),
        Ok(p) if p == UNICODE_PREFIX => {
            let units = body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            let mut s: String = char::decode_utf16(units)
                .map(|c| c.unwrap_or('\u{fffd}'))
                .collect();
            if body.len() % 2 == 1 {
                s.push('\u{fffd}'); // Python: "truncated data"
            }
            s
        }
        _ => value.utf8_chunks().map(|c| c.valid()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_is_piexif_bytes() {
        // piexif.dump({"Exif": {0x9286: UserComment.dump("hé", encoding="unicode")}}).hex()
        let want = "4578696600004d4d002a00000008000187690004000000010000001a00000000\
                    0001928600070000000c00000028554e49434f4445000068 00e9";
        let got: String = dump_user_comment("hé")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want.replace(' ', ""));
    }

    #[test]
    fn round_trip_and_fallbacks() {
        let text = "a 猫, (masterpiece:1.2) 🎨\nSteps: 20";
        assert_eq!(
            parameters(&dump_user_comment(text)).unwrap().as_deref(),
            Some(text)
        );
        // bare TIFF (a WebP EXIF chunk) reads the same
        assert_eq!(
            parameters(&dump_user_comment(text)[6..])
                .unwrap()
                .as_deref(),
            Some(text)
        );
        assert_eq!(decode_user_comment(b"ASCII\0\0\0ab\xffc"), "ab\u{fffd}c");
        assert_eq!(
            decode_user_comment(b"UNICODE\0\0a\xd8\x00\0b\0"),
            "a\u{fffd}b\u{fffd}"
        );
        // unknown prefix: A1111 decodes everything as UTF-8, dropping bad bytes
        assert_eq!(
            decode_user_comment(b"\0\0\0\0\0\0\0\0hi\xff"),
            "\0\0\0\0\0\0\0\0hi"
        );
        assert_eq!(decode_user_comment(b"short"), "short");
        assert_eq!(decode_user_comment(b""), "");
        // an empty comment is no parameters; an unknown block is nothing
        assert_eq!(parameters(&dump_user_comment("")).unwrap(), None);
        assert_eq!(parameters(b"JUNKJUNKJUNK").unwrap(), None);
    }

    #[test]
    fn crafted_blocks_fail_cleanly() {
        let good = dump_user_comment("hello");
        // every truncation: an error or nothing, never a panic
        for n in 0..good.len() {
            let _ = parameters(&good[..n]);
        }
        // a huge count
        let mut huge = good.clone();
        huge[6 + 32..6 + 36].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parameters(&huge)
            .unwrap_err()
            .contains("past the block's end"));
        // IFD0 offset far away
        let mut far = good.clone();
        far[6 + 4..6 + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(parameters(&far).is_err());
        // an Exif IFD pointing at itself is just read once (no recursion)
        let mut selfp = good;
        selfp[6 + 18..6 + 22].copy_from_slice(&8u32.to_be_bytes());
        assert_eq!(parameters(&selfp).unwrap(), None);
    }
}
