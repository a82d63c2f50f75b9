//! The hashes A1111 gives network files (`modules/hashes.py`): for a `.safetensors` file
//! kohya's "addnet" hash (`addnet_hash_safetensors`), for others the sha256 of the whole file
//! (`calculate_sha256`, [`crate::sha256_file`]).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, WeightsError};

/// A1111's `addnet_hash_safetensors`: the sha256 (lowercase hex) of everything after the
/// header, i.e. from byte `8 + n` where `n` is the little-endian `u64` of the first 8 bytes.
///
/// Restated for any content, as A1111 reads it: a file shorter than 8 bytes gives `n` from
/// the bytes there are (`int.from_bytes` of fewer bytes), and an offset at or past the end
/// hashes nothing (the sha256 of the empty string).
pub fn addnet_hash(path: &Path) -> Result<String> {
    let io = |e| WeightsError::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len8 = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = f.read(&mut len8[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let n = u64::from_le_bytes(len8);
    let size = f.metadata().map_err(io)?.len();
    let mut h = Sha256::new();
    if let Some(offset) = n.checked_add(8).filter(|&o| o < size) {
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = f.read(&mut buf).map_err(io)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
    }
    Ok(hex::encode(h.finalize()))
}
