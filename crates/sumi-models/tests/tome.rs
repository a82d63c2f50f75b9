//! Token merging against tomesd 0.1.3 from PyPI (tools/reference/make_tome_fixtures.py,
//! fixtures/tome/): the merge plan's round trip `unmerge(merge(x))` on random tokens, with grids
//! whose 2 × 2 windows do not fit at the edges and a merge count over the sources (capped),
//! equal to tomesd's within 1e-6; the merged length exactly.

use candle_core::Tensor;
use sumi_models::tome::TokenMerge;
use sumi_testkit::{fixture, Cases};

#[test]
fn merge_round_trip_matches_tomesd() {
    let dir = sumi_testkit::fixtures().join("tome");
    let path = dir.join("cases.json");
    let json = fixture::read_json(&path).unwrap();
    let cases = Cases::<serde_json::Value>::from_document(&path, &json, "/merge")
        .and_then(|c| c.exactly(4))
        .unwrap()
        .into_vec();
    let r = fixture::tensors(&dir.join("reference.safetensors")).unwrap();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let get = |k: &str| -> &Tensor { &r[&format!("merge/{name}/{k}")] };
        let (w, h) = (
            c["w"].as_u64().unwrap() as usize,
            c["h"].as_u64().unwrap() as usize,
        );
        let plan = TokenMerge::plan(
            get("metric"),
            (w, h),
            (2, 2),
            c["r"].as_u64().unwrap() as usize,
        )
        .unwrap()
        .unwrap();
        let merged = plan.merge(get("x")).unwrap();
        assert_eq!(
            merged.dim(1).unwrap() as u64,
            c["merged_len"].as_u64().unwrap(),
            "{name}: merged length"
        );
        let back = plan.unmerge(&merged).unwrap();
        let e = sumi_testkit::rel_err_floor(&back, get("roundtrip"), 1.0);
        println!("{name}: round trip vs tomesd {e:.1e}");
        assert!(e < 1e-6, "{name}: {e:e}");
    }
}
