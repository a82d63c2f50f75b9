//! Structural checks of PNG and WebP containers before their decoders see them (issue 14's
//! fuzzing): chunks must lie inside the file, and a PNG palette must hold whole RGB entries.
//! The decoders trust both: a 49-byte `PLTE` made png 0.18 panic, and a WebP `EXIF` chunk
//! declaring 4 GiB made image-webp allocate that much to read the orientation.

use std::io::{Read, Seek, SeekFrom};

/// Most chunks walked in one file (a real PNG or WebP has a few dozen; IDAT-split PNGs a few
/// thousand).
const MAX_CHUNKS: usize = 1 << 20;

/// Checks the chunk structure of a PNG (`\x89PNG…`) or WebP (`RIFF….WEBP`) stream; other
/// formats pass. `Err` says what is wrong.
pub fn check_container(r: &mut (impl Read + Seek)) -> std::io::Result<Result<(), String>> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 12];
    let n = read_up_to(r, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        walk_png(r, len)
    } else if head.len() == 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        walk_webp(
            r,
            len,
            u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        )
    } else {
        Ok(Ok(()))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// PNG chunks: length (big-endian), type, data, CRC; each inside the file, `PLTE` a multiple
/// of 3 bytes. A stream that ends early is left to the decoder (it says "truncated").
fn walk_png(r: &mut (impl Read + Seek), len: u64) -> std::io::Result<Result<(), String>> {
    let mut at = 8u64;
    for _ in 0..MAX_CHUNKS {
        r.seek(SeekFrom::Start(at))?;
        let mut h = [0u8; 8];
        if read_up_to(r, &mut h)? < 8 {
            return Ok(Ok(()));
        }
        let size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let kind = &h[4..8];
        if kind == b"PLTE" && size % 3 != 0 {
            return Ok(Err(format!(
                "broken PNG file (a palette of {size} bytes is not whole RGB entries)"
            )));
        }
        if kind == b"IEND" {
            return Ok(Ok(()));
        }
        at = at + 12 + size;
        if at > len {
            return Ok(Ok(()));
        }
    }
    Ok(Err(format!(
        "broken PNG file (more than {MAX_CHUNKS} chunks)"
    )))
}

/// WebP (RIFF) chunks: fourcc, size (little-endian), data padded to even; every chunk inside
/// the file and inside the RIFF size.
fn walk_webp(
    r: &mut (impl Read + Seek),
    len: u64,
    riff_size: u32,
) -> std::io::Result<Result<(), String>> {
    let end = len.min(8 + u64::from(riff_size));
    let mut at = 12u64;
    for _ in 0..MAX_CHUNKS {
        if at + 8 > end {
            return Ok(Ok(()));
        }
        r.seek(SeekFrom::Start(at))?;
        let mut h = [0u8; 8];
        if read_up_to(r, &mut h)? < 8 {
            return Ok(Ok(()));
        }
        let size = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
        let next = at + 8 + size + (size & 1);
        if at + 8 + size > end {
            let kind = String::from_utf8_lossy(&h[..4]).into_owned();
            return Ok(Err(format!(
                "broken WebP file (its {kind:?} chunk declares {size} bytes, past the end of the file)"
            )));
        }
        at = next;
    }
    Ok(Err(format!(
        "broken WebP file (more than {MAX_CHUNKS} chunks)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn check(b: &[u8]) -> Result<(), String> {
        check_container(&mut Cursor::new(b)).unwrap()
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        v.extend_from_slice(&[0; 4]);
        v
    }

    #[test]
    fn a_palette_of_partial_entries_is_refused() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &[0; 13]));
        let mut ok = png.clone();
        ok.extend(png_chunk(b"PLTE", &[0; 48]));
        ok.extend(png_chunk(b"IEND", &[]));
        assert_eq!(check(&ok), Ok(()));
        png.extend(png_chunk(b"PLTE", &[0; 49]));
        let e = check(&png).unwrap_err();
        assert!(e.contains("palette of 49 bytes"), "{e}");
    }

    #[test]
    fn a_webp_chunk_past_the_end_is_refused() {
        let mut w = b"RIFF\0\0\0\0WEBP".to_vec();
        w.extend_from_slice(b"VP8X");
        w.extend_from_slice(&10u32.to_le_bytes());
        w.extend_from_slice(&[0; 10]);
        w.extend_from_slice(b"EXIF");
        w.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        w.extend_from_slice(&[0; 6]);
        let n = (w.len() - 8) as u32;
        w[4..8].copy_from_slice(&n.to_le_bytes());
        let e = check(&w).unwrap_err();
        assert!(
            e.contains("\"EXIF\" chunk declares 4294967280 bytes"),
            "{e}"
        );
        // other formats pass untouched
        assert_eq!(check(b"\xff\xd8\xff\xe0 jpeg"), Ok(()));
    }
}
