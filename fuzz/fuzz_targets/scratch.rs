//! A per-process scratch file on tmpfs for targets whose API reads a path.

use std::path::PathBuf;

/// Writes `data` to this process's scratch file named `<stem>.<ext>` (on `/dev/shm` when it
/// exists, else the temporary folder) and returns its path; the file is overwritten each call.
pub fn write(stem: &str, ext: &str, data: &[u8]) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("sumi-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cannot create the scratch folder");
    let path = dir.join(format!("{stem}.{ext}"));
    std::fs::write(&path, data).expect("cannot write the scratch file");
    path
}
