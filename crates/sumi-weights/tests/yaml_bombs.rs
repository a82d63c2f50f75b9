//! YAML alias bombs, deep nesting and oversized documents in a checkpoint's sibling
//! `model.yaml` (issue 14, finding 3): refused with an error naming the file.

use sumi_weights::WeightsError;

#[test]
fn a_yaml_alias_bomb_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut y = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        y.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    assert!(y.len() < 700, "{}", y.len());
    let p = d.path().join("model.yaml");
    std::fs::write(&p, &y).unwrap();
    match sumi_weights::config::read_ldm_yaml(&p) {
        Err(WeightsError::BadConfig { path, detail }) => {
            assert_eq!(path, p);
            assert_eq!(
                detail,
                "more than 100000 nodes once its aliases are expanded"
            );
        }
        other => panic!("{other:?}"),
    }
    // deep block nesting
    let deep = "- ".repeat(200_000) + "x\n";
    std::fs::write(&p, deep).unwrap();
    match sumi_weights::config::read_ldm_yaml(&p) {
        Err(WeightsError::BadConfig { detail, .. }) => {
            assert_eq!(detail, "nested deeper than 100")
        }
        other => panic!("{other:?}"),
    }
    // a document over the size limit
    std::fs::write(&p, "#".repeat((1 << 20) + 1)).unwrap();
    match sumi_weights::config::read_ldm_yaml(&p) {
        Err(WeightsError::BadConfig { detail, .. }) => {
            assert_eq!(detail, "larger than the 1048576-byte limit")
        }
        other => panic!("{other:?}"),
    }
    // an ordinary config with an anchor still reads
    std::fs::write(
        &p,
        "model:\n  params:\n    parameterization: &p v\n    unet_config:\n      params:\n        num_heads: 8\n        x: *p\n",
    )
    .unwrap();
    let y = sumi_weights::config::read_ldm_yaml(&p).unwrap();
    assert_eq!(y.parameterization.as_deref(), Some("v"));
    assert_eq!(y.num_heads, Some(8));
}
