//! PNG files that remember how they were made: the infotext in a `parameters` text chunk, written
//! as A1111 v1.10.1 writes it, and read back as A1111 reads it.
//!
//! A1111's `images.save_image_with_geninfo` gives Pillow a `PngInfo` with
//! `add_text("parameters", infotext)`. Pillow writes that as an uncompressed `tEXt` chunk when the
//! text is Latin-1 encodable, else as an uncompressed `iTXt` chunk (empty language tag and
//! translated keyword, UTF-8 text), right after `IHDR`. [`encode_png`] writes the same chunk bytes.
//!
//! Reading ([`read_parameters`]) takes the `parameters` key from any `tEXt`, `zTXt` or `iTXt`
//! chunk (compressed or not), the last one winning as in Pillow's `info` dict; chunk CRCs are
//! checked.
//!
//! [`write_png`] writes atomically and never overwrites: the PNG goes to a temporary file in the
//! destination's folder, is flushed to disk, and is then moved to its name with a no-clobber
//! rename, so the name holds either nothing or the whole file.

use std::io::{Read, Write};
use std::path::Path;

use image::RgbImage;

use crate::error::{PipelineError, Result};

/// The text key A1111 stores its infotext under.
pub const PARAMETERS_KEY: &str = "parameters";

/// The PNG signature.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The most a compressed text chunk may inflate to (Pillow's `MAX_TEXT_CHUNK` is 1 MiB; this is
/// more lenient but still bounded).
const MAX_TEXT: u64 = 16 << 20;

/// The chunk Pillow's `PngInfo.add_text(key, value)` adds: `(chunk type, chunk data)`.
pub fn text_chunk(key: &str, value: &str) -> ([u8; 4], Vec<u8>) {
    let latin1: Option<Vec<u8>> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    let mut data: Vec<u8> = key.chars().map(|c| c as u32 as u8).collect();
    data.push(0);
    match latin1 {
        Some(bytes) => {
            data.extend_from_slice(&bytes);
            (*b"tEXt", data)
        }
        None => {
            // compression flag 0, method 0, empty language tag, empty translated keyword.
            data.extend_from_slice(&[0, 0, 0, 0]);
            data.extend_from_slice(value.as_bytes());
            (*b"iTXt", data)
        }
    }
}

/// Encodes an 8-bit RGB PNG with `parameters` (when given) in a text chunk right after `IHDR`,
/// as Pillow does for A1111.
pub fn encode_png(
    image: &RgbImage,
    parameters: Option<&str>,
) -> std::result::Result<Vec<u8>, String> {
    let texts: Vec<(String, String)> = parameters
        .map(|t| (PARAMETERS_KEY.to_string(), t.to_string()))
        .into_iter()
        .collect();
    encode_png_with_texts(image, &texts)
}

/// Encodes an 8-bit RGB PNG with `texts` (key, value) as text chunks after `IHDR`, in order, as
/// Pillow writes `PngInfo.add_text` items (A1111's `encode_pil_to_base64` and `save_image`).
pub fn encode_png_with_texts(
    image: &RgbImage,
    texts: &[(String, String)],
) -> std::result::Result<Vec<u8>, String> {
    let size = image.dimensions();
    encode_raw(size, png::ColorType::Rgb, image.as_raw(), texts)
}

/// [`encode_png_with_texts`] of an RGB or RGBA picture (an 8-bit RGB or RGBA PNG).
pub fn encode_picture_png(
    image: &crate::upscale::Picture,
    texts: &[(String, String)],
) -> std::result::Result<Vec<u8>, String> {
    let color = match image {
        crate::upscale::Picture::Rgb(_) => png::ColorType::Rgb,
        crate::upscale::Picture::Rgba(_) => png::ColorType::Rgba,
    };
    encode_raw(image.dimensions(), color, image.as_raw(), texts)
}

fn encode_raw(
    (width, height): (u32, u32),
    color: png::ColorType,
    raw: &[u8],
    texts: &[(String, String)],
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        for (k, v) in texts {
            let (ty, data) = text_chunk(k, v);
            w.write_chunk(png::chunk::ChunkType(ty), &data)
                .map_err(|e| e.to_string())?;
        }
        w.write_image_data(raw).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes `image` as a PNG at `path` with `parameters` in its `parameters` chunk, atomically:
/// a temporary file beside it, flushed, then renamed without replacing anything. Fails with
/// [`PipelineError::OutputExists`] when `path` exists (also when it appears meanwhile) and
/// leaves no temporary file behind on failure.
pub fn write_png(path: &Path, image: &RgbImage, parameters: Option<&str>) -> Result<()> {
    let write_err = |reason: String| PipelineError::PngWrite {
        path: path.to_path_buf(),
        reason,
    };
    if path.symlink_metadata().is_ok() {
        return Err(PipelineError::OutputExists {
            path: path.to_path_buf(),
        });
    }
    let bytes = encode_png(image, parameters).map_err(write_err)?;
    write_new_file(path, &bytes)
}

/// Puts `bytes` at `path` atomically and without replacing an existing file.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let write_err = |reason: String| PipelineError::PngWrite {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| write_err("the path has no file name".into()))?
        .to_string_lossy()
        .into_owned();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| {
            write_err(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| write_err(e.to_string()))?;
    // Dropping the temporary file on an error below removes it.
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            PipelineError::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            write_err(e.error.to_string())
        }
    })?;
    // Make the new name durable too (best effort: not every platform can sync a folder).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Calls `f(type, data)` for every chunk of a PNG up to `IEND`, CRCs checked. Fails on a bad
/// signature, a truncated chunk or a CRC mismatch.
fn walk_chunks(
    bytes: &[u8],
    mut f: impl FnMut(&[u8; 4], &[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    if bytes.len() < 8 || bytes[..8] != SIGNATURE {
        return Err("not a PNG file (bad signature)".into());
    }
    let mut pos = 8usize;
    loop {
        let header = bytes
            .get(pos..pos + 8)
            .ok_or("truncated: the file ends before IEND")?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let ty = [header[4], header[5], header[6], header[7]];
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or_else(|| format!("truncated {} chunk", String::from_utf8_lossy(&ty)))?;
        let crc = bytes
            .get(pos + 8 + len..pos + 12 + len)
            .ok_or("truncated: a chunk's CRC is missing")?;
        let mut h = crc32fast::Hasher::new();
        h.update(&ty);
        h.update(data);
        if h.finalize() != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(format!(
                "CRC mismatch in a {} chunk",
                String::from_utf8_lossy(&ty)
            ));
        }
        if &ty == b"IEND" {
            return Ok(());
        }
        f(&ty, data)?;
        pos += 12 + len;
    }
}

/// Every text chunk of a PNG, `(key, value)` in file order, decoded as Pillow decodes them
/// (`tEXt`/`zTXt` as Latin-1, `iTXt` as UTF-8). Fails on a bad signature, a truncated chunk, a
/// CRC mismatch or undecodable text.
pub fn text_chunks(bytes: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    walk_chunks(bytes, |ty, data| {
        if matches!(ty, b"tEXt" | b"zTXt" | b"iTXt") {
            out.push(decode_text(ty, data)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A PNG's `eXIf` chunk as Pillow's `info["exif"]` holds it (`Exif\0\0` and the TIFF block; the
/// last chunk wins), `None` when it has none.
pub fn exif_chunk(bytes: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut out = None;
    walk_chunks(bytes, |ty, data| {
        if ty == b"eXIf" {
            let mut v = crate::exif::EXIF_HEADER.to_vec();
            v.extend_from_slice(data);
            out = Some(v);
        }
        Ok(())
    })?;
    Ok(out)
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn inflate(b: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(b)
        .take(MAX_TEXT + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad compressed text: {e}"))?;
    if out.len() as u64 > MAX_TEXT {
        return Err(format!("compressed text inflates past {MAX_TEXT} bytes"));
    }
    Ok(out)
}

fn decode_text(ty: &[u8; 4], data: &[u8]) -> std::result::Result<(String, String), String> {
    let nul = data
        .iter()
        .position(|&b| b == 0)
        .ok_or("a text chunk without a keyword separator")?;
    let key = latin1(&data[..nul]);
    let rest = &data[nul + 1..];
    let value = match ty {
        b"tEXt" => latin1(rest),
        b"zTXt" => latin1(&inflate(rest.get(1..).ok_or("empty zTXt chunk")?)?),
        _ => {
            let (&flag, rest) = rest.split_first().ok_or("short iTXt chunk")?;
            let rest = rest.get(1..).ok_or("short iTXt chunk")?; // compression method
            let lang_end = rest.iter().position(|&b| b == 0).ok_or("bad iTXt chunk")?;
            let rest = &rest[lang_end + 1..];
            let tkey_end = rest.iter().position(|&b| b == 0).ok_or("bad iTXt chunk")?;
            let text = &rest[tkey_end + 1..];
            let raw = if flag == 1 {
                inflate(text)?
            } else {
                text.to_vec()
            };
            String::from_utf8(raw).map_err(|_| "iTXt text is not UTF-8".to_string())?
        }
    };
    Ok((key, value))
}

/// The `parameters` text of a PNG (A1111's `read_info_from_image`), `None` when it has none.
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|e| PipelineError::PngRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parameters_from_bytes(&bytes).map_err(|reason| PipelineError::PngRead {
        path: path.to_path_buf(),
        reason,
    })
}

/// [`read_parameters`] on PNG bytes in memory.
pub fn parameters_from_bytes(bytes: &[u8]) -> std::result::Result<Option<String>, String> {
    Ok(text_chunks(bytes)?
        .into_iter()
        .rev()
        .find(|(k, _)| k == PARAMETERS_KEY)
        .map(|(_, v)| v))
}
