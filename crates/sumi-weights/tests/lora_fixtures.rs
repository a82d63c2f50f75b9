//! The network files of `fixtures/lora/` (written by tools/reference/make_lora_fixtures.py in
//! the layouts real files use) read as A1111 v1.10.1 reads them: `cases.json` records, per
//! file, its name and alias, the modules A1111 matched (`sd_key`s), the keys it logged as
//! unmatched, and the bundled embeddings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sumi_weights::lora::{read_network, NetworkLibrary, TargetIndex};
use sumi_weights::{Family, Weights};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn every_fixture_file_matches_as_in_a1111() {
    let root = sumi_testkit::fixtures().join("lora");
    let cases = sumi_testkit::fixture::read_json(&root.join("cases.json")).unwrap();
    let networks = cases["networks"].as_object().expect("`networks`");
    assert!(networks.len() >= 20, "{} networks", networks.len());
    let dir = tempfile::tempdir().unwrap();
    let mut indexes: BTreeMap<&str, TargetIndex> = BTreeMap::new();
    for (arch, family) in [("sd1", Family::Sd1), ("sd2-v", Family::Sd2)] {
        let model = sumi_testkit::tiny_model(arch, &dir.path().join(arch));
        let w = Weights::open(&model).unwrap();
        indexes.insert(arch, TargetIndex::new(w.names(), family));
    }
    let libs: BTreeMap<&str, NetworkLibrary> = ["sd1", "sd2-v"]
        .into_iter()
        .map(|a| (a, NetworkLibrary::scan(&[root.join(a)]).unwrap()))
        .collect();
    let mut modules_seen = 0;
    for (rel, spec) in networks {
        let arch = spec["arch"].as_str().unwrap();
        let path: PathBuf = root.join(rel);
        // the folder scan names and aliases it as A1111 does
        let lib = &libs[arch];
        assert!(lib.problems().is_empty(), "{:?}", lib.problems());
        for key in ["name", "alias"] {
            let n = spec[key].as_str().unwrap();
            assert_eq!(
                lib.find(n).map(|e| &e.path),
                Some(&path),
                "{rel}: {key} {n}"
            );
        }
        let net = read_network(&path, &indexes[arch]).unwrap_or_else(|e| panic!("{e}"));
        // every module A1111 matched, applied or not
        let mut got: Vec<String> = net
            .targets
            .iter()
            .map(|t| t.sd_key.clone())
            .chain(net.inert.iter().map(|m| m.sd_key.clone()))
            .collect();
        got.sort();
        let mut want = strings(&spec["modules"]);
        want.sort();
        assert_eq!(got, want, "{rel}: modules");
        modules_seen += want.len();
        // A1111 also logs the bundle_emb keys as unmatched; Sumi lists them as embeddings
        let unmatched: Vec<String> = strings(&spec["unmatched"])
            .into_iter()
            .filter(|k| !k.starts_with("bundle_emb."))
            .collect();
        assert_eq!(net.unmatched, unmatched, "{rel}: unmatched");
        let empty = serde_json::Map::new();
        let bundles = spec["bundled_embeddings"].as_object().unwrap_or(&empty);
        let got: Vec<(&str, Vec<usize>)> = net
            .bundled_embeddings
            .iter()
            .map(|e| (e.name.as_str(), e.vectors.as_ref().unwrap().dims().to_vec()))
            .collect();
        let want: Vec<(&str, Vec<usize>)> = bundles
            .iter()
            .map(|(name, data)| {
                let (_, shape) = data.as_object().unwrap().iter().next().unwrap();
                let shape = shape.get("*").unwrap_or(shape);
                let dims = shape
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (name.as_str(), dims)
            })
            .collect();
        assert_eq!(got, want, "{rel}: bundled embeddings");
    }
    assert!(modules_seen >= 100, "{modules_seen} modules");
}
