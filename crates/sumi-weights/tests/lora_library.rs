//! The LoRA folders as A1111 v1.10.1 lists them (`list_available_networks`,
//! `process_network_files` and the lookup of `load_networks` in
//! `extensions-builtin/Lora/networks.py`; `walk_files` in `modules/util.py`) and the hashes of
//! `modules/hashes.py`. Files are written here; the pinned hashes were computed with A1111's
//! own `addnet_hash_safetensors` and `hashlib.sha256` on the same bytes (Python, once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sumi_weights::lora::{addnet_hash, NetworkLibrary, SdVersion};
use sumi_weights::safetensors::serialize;
use sumi_weights::{StorageDtype, WeightsError};

/// A valid one-tensor safetensors file with `metadata`.
fn net(dir: &Path, rel: &str, metadata: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let meta: BTreeMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let t = (
        "lora_unet_conv_in.diff".to_string(),
        StorageDtype::F32,
        vec![1],
        1f32.to_le_bytes().to_vec(),
    );
    std::fs::write(&p, serialize(&[t], &meta)).unwrap();
    p
}

fn names(lib: &NetworkLibrary) -> Vec<String> {
    lib.all().iter().map(|n| n.name.clone()).collect()
}

#[test]
fn folders_are_walked_in_natural_order_with_a1111s_extensions() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("Lora");
    net(&root, "b10.safetensors", &[]);
    net(&root, "B2.SafeTensors", &[]);
    net(&root, "a.b.ckpt", &[]);
    net(&root, "sub2/x.PT", &[]);
    net(&root, "Sub10/y.pt", &[]);
    net(&root, "sub2/notes.txt", &[]);
    net(&root, "sub2/.pt", &[]);
    net(&root, "sub2/noext", &[]);
    let lyco = d.path().join("LyCORIS");
    net(&lyco, "z.safetensors", &[]);
    let lib = NetworkLibrary::scan(&[root.clone(), d.path().join("absent"), lyco]).unwrap();
    // the folder's own files, then the subfolders (`Lora/sub2` before `Lora/Sub10`), then the
    // next folder
    assert_eq!(names(&lib), ["a.b", "B2", "b10", "x", "y", "z"]);
    assert!(lib.problems().is_empty(), "{:?}", lib.problems());
    let b2 = lib.find("B2").unwrap();
    assert!(b2.is_safetensors);
    assert_eq!(b2.path, root.join("B2.SafeTensors"));
    assert!(!lib.find("x").unwrap().is_safetensors);
    assert!(lib.find("b2").is_none());
    // a folder that exists and is not one cannot be walked
    let file = root.join("b10.safetensors");
    match NetworkLibrary::scan(std::slice::from_ref(&file)) {
        Err(WeightsError::Io { path, .. }) => assert_eq!(path, file),
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_aliases_and_forbidden_aliases_resolve_as_a1111() {
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    net(&one, "a.safetensors", &[("ss_output_name", "b")]);
    net(&one, "b.safetensors", &[]);
    net(&one, "c.safetensors", &[("ss_output_name", "None")]);
    net(&one, "d.safetensors", &[("ss_output_name", "Addams")]);
    net(&one, "e.safetensors", &[("ss_output_name", "Nice Style")]);
    net(&one, "y.safetensors", &[("ss_output_name", "why")]);
    net(&two, "y.safetensors", &[]);
    let lib = NetworkLibrary::scan(&[one.clone(), two.clone()]).unwrap();
    assert_eq!(names(&lib), ["a", "b", "c", "d", "e", "y"]);
    let path = |n: &str| lib.find(n).map(|e| e.path.clone());
    // "b" is a's alias and b's name: forbidden, so only the file name finds it
    assert!(lib.is_forbidden_alias("B"));
    assert_eq!(path("b"), Some(one.join("b.safetensors")));
    assert_eq!(lib.prompt_name(lib.find("a").unwrap()), "a");
    // "none" is always forbidden: no file is named "None"
    assert_eq!(path("None"), None);
    assert_eq!(path("c"), Some(one.join("c.safetensors")));
    assert_eq!(lib.prompt_name(lib.find("c").unwrap()), "c");
    // A1111 lists "Addams" but compares lowercased names, so it never applies
    assert_eq!(path("Addams"), Some(one.join("d.safetensors")));
    assert_eq!(lib.prompt_name(lib.find("d").unwrap()), "Addams");
    assert_eq!(path("Nice Style"), Some(one.join("e.safetensors")));
    assert_eq!(lib.find("e").unwrap().alias, "Nice Style");
    // a later file takes the name; the earlier one's alias still finds the earlier file
    assert_eq!(path("y"), Some(two.join("y.safetensors")));
    assert_eq!(path("why"), Some(one.join("y.safetensors")));
    assert_eq!(lib.all().iter().filter(|e| e.name == "y").count(), 1);
    assert_eq!(lib.all()[5].path, two.join("y.safetensors"));
}

/// The bytes the pinned hashes were computed on: an 8-byte header length (48), a 48-byte JSON
/// header, then bytes 0..=255 five times.
fn hash_bytes() -> Vec<u8> {
    let mut h = br#"{"__metadata__":{"ss_output_name":"aliased"}}"#.to_vec();
    h.resize(48, b' ');
    let mut b = 48u64.to_le_bytes().to_vec();
    b.extend_from_slice(&h);
    for _ in 0..5 {
        b.extend(0..=255u8);
    }
    b
}

#[test]
fn hashes_are_a1111s_addnet_and_sha256() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("h.safetensors"), hash_bytes()).unwrap();
    std::fs::write(d.path().join("h2.pt"), hash_bytes()).unwrap();
    net(
        d.path(),
        "k.safetensors",
        &[
            ("sshs_model_hash", "0123456789abcdefXYZ"),
            ("ss_v2", "True"),
        ],
    );
    net(
        d.path(),
        "xl.safetensors",
        &[("ss_base_model_version", "sdxl_base_v1-0")],
    );
    let lib = NetworkLibrary::scan(&[d.path().to_path_buf()]).unwrap();
    // the header is not a valid safetensors layout, but its metadata reads, as in A1111
    let h = lib.find("aliased").unwrap();
    assert_eq!(h.name, "h");
    assert_eq!(
        h.hash().unwrap(),
        "d414b085826eb06778483ba35564dc849e643359f69ed9747878ba6e54985bed"
    );
    assert_eq!(h.shorthash().unwrap(), "d414b085826e");
    assert_eq!(h.sd_version(), SdVersion::Sd1);
    let pt = lib.find("h2").unwrap();
    assert_eq!(
        pt.hash().unwrap(),
        "abb8da474c13347819e58b8b9d54b108bad00212b2681a782b9ca11a207ba00e"
    );
    assert_eq!(pt.sd_version(), SdVersion::Unknown);
    let k = lib.find("k").unwrap();
    assert_eq!(k.shorthash().unwrap(), "0123456789ab");
    assert_eq!(k.sd_version(), SdVersion::Sd2);
    assert_eq!(lib.find("xl").unwrap().sd_version(), SdVersion::Sdxl);
    // A1111's reading of short files: the length from the bytes there are, nothing hashed
    let empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let short = d.path().join("short.bin");
    std::fs::write(&short, [5u8, 0, 0]).unwrap();
    assert_eq!(addnet_hash(&short).unwrap(), empty_sha);
    let mut beyond = 1000u64.to_le_bytes().to_vec();
    beyond.extend_from_slice(b"xyz");
    std::fs::write(&short, beyond).unwrap();
    assert_eq!(addnet_hash(&short).unwrap(), empty_sha);
}

#[cfg(unix)]
#[test]
fn fifos_broken_links_and_bad_headers_are_reported_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    net(d.path(), "good.safetensors", &[]);
    let fifo = d.path().join("pipe.safetensors");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    let link = d.path().join("dangling.pt");
    std::os::unix::fs::symlink(d.path().join("nowhere"), &link).unwrap();
    let junk = d.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    let lib = NetworkLibrary::scan(&[d.path().to_path_buf()]).unwrap();
    // the bad header is listed (no metadata, alias = name), as A1111 lists it
    assert_eq!(names(&lib), ["good", "junk"]);
    assert_eq!(lib.find("junk").unwrap().alias, "junk");
    let mut problems: Vec<(PathBuf, String)> = lib
        .problems()
        .iter()
        .map(|e| match e {
            WeightsError::Io { path, .. } => (path.clone(), "io".into()),
            WeightsError::BadNetwork { path, detail } => (path.clone(), detail.clone()),
            WeightsError::BadSafetensors { path, detail } => (path.clone(), detail.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            (link, "io".to_string()),
            (
                junk,
                "not a safetensors file (no JSON header); listed without metadata".into()
            ),
            (fifo, "not a regular file; left out of the list".into()),
        ]
    );
}
