//! One LoRA merge case of a `tools/reference/` fixture (`make_lora_fixtures.py`,
//! `make_sdxl_lora_fixtures.py`) checked against a pipeline: every tensor A1111 changes within
//! 1e-6 relative, no other tensor changed, A1111's error counts, the unmatched keys named.

use std::collections::{BTreeSet, HashMap};

use candle_core::Tensor;
use serde_json::Value;
use sumi_pipeline::Pipeline;

use super::max_abs;

/// The `<lora:…>` tags of a case's networks, in order.
pub fn tags(networks: &Value) -> String {
    networks
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let mut t = format!(
                "<lora:{}:te={}:unet={}",
                n["name"].as_str().unwrap(),
                n["te"].as_f64().unwrap(),
                n["unet"].as_f64().unwrap()
            );
            if let Some(d) = n["dyn"].as_u64() {
                t.push_str(&format!(":dyn={d}"));
            }
            t + ">"
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks case `c` on `pipe` against `expected` (`"<case>/<file key>"` → tensor); returns the
/// worst relative error and the job's warnings.
pub fn check_case(
    pipe: &Pipeline,
    c: &Value,
    expected: &HashMap<String, Tensor>,
) -> (f64, Vec<String>) {
    let name = c["name"].as_str().unwrap();
    let (merged, warnings) = pipe.merged_tensors(&tags(&c["networks"])).unwrap();
    let merged: HashMap<String, Tensor> = merged.into_iter().collect();
    let mut want_changed = BTreeSet::new();
    let mut worst = 0f64;
    for pair in c["tensors"].as_array().unwrap() {
        let key = pair[0].as_str().unwrap();
        let want = &expected[&format!("{name}/{key}")];
        let parts: Vec<Tensor> = pair[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let n = v.as_str().unwrap();
                want_changed.insert(n.to_string());
                merged
                    .get(n)
                    .unwrap_or_else(|| panic!("{name}: {n} not merged"))
                    .clone()
            })
            .collect();
        assert!(!parts.is_empty(), "{name}: {key} has no canonical name");
        let got = Tensor::cat(&parts, 0)
            .unwrap()
            .reshape(want.shape())
            .unwrap();
        let e = sumi_testkit::rel_err(&got, want);
        worst = worst.max(e);
        assert!(e <= 1e-6, "{name}: {key} relative error {e:.2e}");
    }
    assert_eq!(
        c["tensors"].as_array().unwrap().len(),
        c["changed"].as_u64().unwrap() as usize,
        "{name}"
    );
    // every other tensor the networks touched is left as it was (a failed layer, a zero change)
    for (n, t) in &merged {
        if !want_changed.contains(n) {
            let stored = pipe.checkpoint_tensor(n).unwrap();
            let diff = max_abs(&(t - stored.reshape(t.shape()).unwrap()).unwrap());
            assert_eq!(
                diff, 0.0,
                "{name}: {n} changed by {diff} though A1111 leaves it"
            );
        }
    }
    // A1111's error counts
    let errors = c["errors"].as_object().unwrap();
    if errors.is_empty() {
        assert!(
            !warnings
                .iter()
                .any(|w| w.starts_with("Networks with errors")),
            "{name}: {warnings:?}"
        );
    } else {
        let line: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{k} ({})", v.as_u64().unwrap()))
            .collect();
        let line = format!("Networks with errors: {}", line.join(", "));
        assert!(
            warnings.contains(&line),
            "{name}: {warnings:?} lacks {line}"
        );
    }
    // keys that match no layer are named
    let unmatched: usize = c["unmatched"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .filter(|k| !k.as_str().unwrap().starts_with("bundle_emb."))
        .count();
    if unmatched > 0 {
        let said = format!("{unmatched} keys match no layer");
        assert!(
            warnings.iter().any(|w| w.contains(&said)),
            "{name}: {warnings:?} lacks '{said}'"
        );
    }
    (worst, warnings)
}
