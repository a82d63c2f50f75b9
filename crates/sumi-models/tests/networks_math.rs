//! `sumi_models::networks` against a Python restatement of A1111 v1.10.1's extra-network math
//! (fixtures/networks_math, made by tools/reference/make_network_math_fixtures.py): every module
//! type on linear, conv 1x1, conv 3x3 and norm layers, multipliers, dyn_dim, alpha/scale, DoRA,
//! several networks folded on one layer, the inpainting conv_in pad. Each network's
//! `calc_updown` output and the merged weight/bias must be within 1e-6 (relative to the
//! reference's largest magnitude).

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;
use sumi_models::networks::{merge, merge_each, NetworkModule};
use sumi_testkit::{fixture, max_abs, rel_err, rel_err_floor};

#[derive(Debug)]
struct Net {
    parts: Vec<String>,
    multiplier: f64,
    dyn_dim: Option<usize>,
    kind: String,
    ex_bias: bool,
}

#[derive(Debug)]
struct Case {
    name: String,
    /// linear, conv1x1, conv3x3, inpaint, norm, layernorm (for messages).
    layer: String,
    bias: bool,
    out_bias: bool,
    networks: Vec<Net>,
}

const TOL: f64 = 1e-6;

/// A set of network parts A1111 refuses, and where: `load` (the network fails to load) or
/// `apply` (the network is skipped on the layer).
#[derive(Debug)]
struct Refusal {
    name: String,
    layer: String,
    bias: bool,
    parts: Vec<String>,
    stage: String,
}

struct Fixture {
    cases: Vec<Case>,
    refusals: Vec<Refusal>,
    tensors: HashMap<String, Tensor>,
}

fn load() -> Fixture {
    let dir = fixture::fixtures().join("networks_math");
    let path = dir.join("cases.json");
    let doc = fixture::read_json(&path).unwrap_or_else(|e| panic!("{e}"));
    let list = |pointer: &str, n: usize| {
        fixture::Cases::from_document(&path, &doc, pointer)
            .and_then(|c| c.exactly(n))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_vec()
    };
    let (cases, refusals) = (list("/cases", 62), list("/errors", 20));
    // The cases are read as the document's own JSON values (this crate does not depend on
    // serde to derive a case type): these lines fix their type to the document's.
    let _same_type = [&cases[0], &refusals[0], &doc];
    let text = |v: &_, k: &str| -> String {
        let v: &_ = v;
        let _same: [&_; 2] = [v, &doc];
        v[k].as_str()
            .unwrap_or_else(|| panic!("field {k}: {v}"))
            .to_string()
    };
    let flag = |v: &_, k: &str| -> bool {
        let v: &_ = v;
        let _same: [&_; 2] = [v, &doc];
        v[k].as_bool().unwrap_or_else(|| panic!("field {k}: {v}"))
    };
    let names = |v: &_| -> Vec<String> {
        let v: &_ = v;
        let _same: [&_; 2] = [v, &doc];
        v["parts"]
            .as_array()
            .unwrap_or_else(|| panic!("no parts: {v}"))
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap_or_else(|| panic!("part name: {p}"))
                    .to_string()
            })
            .collect()
    };
    let cases = cases
        .iter()
        .map(|c| {
            let networks = c["networks"]
                .as_array()
                .unwrap_or_else(|| panic!("case without networks: {c}"))
                .iter()
                .map(|n| Net {
                    parts: names(n),
                    multiplier: n["multiplier"]
                        .as_f64()
                        .unwrap_or_else(|| panic!("multiplier: {n}")),
                    dyn_dim: n["dyn_dim"].as_u64().map(|d| d as usize),
                    kind: text(n, "kind"),
                    ex_bias: flag(n, "ex_bias"),
                })
                .collect();
            Case {
                name: text(c, "name"),
                layer: text(c, "layer"),
                bias: flag(c, "bias"),
                out_bias: flag(c, "out_bias"),
                networks,
            }
        })
        .collect();
    let refusals = refusals
        .iter()
        .map(|c| Refusal {
            name: text(c, "name"),
            layer: text(c, "layer"),
            bias: flag(c, "bias"),
            parts: names(c),
            stage: text(c, "stage"),
        })
        .collect();
    let tensors =
        fixture::tensors(&dir.join("cases.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        cases,
        refusals,
        tensors,
    }
}

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    t.get(key)
        .unwrap_or_else(|| panic!("fixture has no tensor {key}"))
}

/// Network `i`'s parts of fixture case `case`.
fn parts(
    case: &str,
    i: usize,
    names: &[String],
    t: &HashMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    names
        .iter()
        .map(|p| (p.clone(), get(t, &format!("{case}/net{i}/{p}")).clone()))
        .collect()
}

fn modules(case: &Case, t: &HashMap<String, Tensor>) -> Vec<NetworkModule> {
    case.networks
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let parts = parts(&case.name, i, &net.parts, t);
            let m = NetworkModule::from_tensors(&parts)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name))
                .unwrap_or_else(|| panic!("{}: no module type", case.name));
            assert_eq!(
                m.kind().class_name(),
                net.kind,
                "{}: module type",
                case.name
            );
            m
        })
        .collect()
}

#[test]
fn every_type_matches_a1111() {
    let Fixture {
        cases, tensors: t, ..
    } = load();
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    let mut plain: BTreeMap<String, f64> = BTreeMap::new();
    for case in &cases {
        let mods = modules(case, &t);
        let weight = get(&t, &format!("{}/weight", case.name));
        let bias = case.bias.then(|| get(&t, &format!("{}/bias", case.name)));
        // Each network's calc_updown on the weight the previous ones left.
        let mut w = weight.clone();
        let mut b = bias.cloned();
        for (i, (m, net)) in mods.iter().zip(&case.networks).enumerate() {
            let (updown, ex_bias) = m
                .calc_updown(&w, net.multiplier, net.dyn_dim)
                .unwrap_or_else(|e| panic!("{} ({}) network {i}: {e}", case.name, case.layer));
            let want = get(&t, &format!("{}/updown{i}", case.name));
            // Relative to the larger of the update and the weight it is added to: A1111's own
            // f32 update carries rounding of order eps·|W| where it is computed from W (OFT's
            // rotated weight minus W, IA3, DoRA), far above eps·|updown| for a small update.
            let e = rel_err_floor(&updown, want, max_abs(&w));
            assert!(e <= TOL, "{} updown{i}: rel err {e:e}", case.name);
            let k = worst.entry(net.kind.clone()).or_default();
            *k = k.max(e);
            let k = plain.entry(net.kind.clone()).or_default();
            *k = k.max(rel_err(&updown, want));
            assert_eq!(ex_bias.is_some(), net.ex_bias, "{} ex_bias{i}", case.name);
            if let Some(x) = &ex_bias {
                let e = rel_err(x, get(&t, &format!("{}/ex_bias{i}", case.name)));
                assert!(e <= TOL, "{} ex_bias{i}: rel err {e:e}", case.name);
            }
            let (nw, nb) = merge(&w, b.as_ref(), &[(m, net.multiplier, net.dyn_dim)])
                .unwrap_or_else(|e| panic!("{} merge {i}: {e}", case.name));
            w = nw;
            b = nb;
        }
        // The fold in one call, strict and tolerant.
        let with: Vec<_> = mods
            .iter()
            .zip(&case.networks)
            .map(|(m, n)| (m, n.multiplier, n.dyn_dim))
            .collect();
        let out = merge_each(weight, bias, &with).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(out.failures.is_empty(), "{}: {:?}", case.name, out.failures);
        let want_w = get(&t, &format!("{}/out_weight", case.name));
        for (label, got) in [("fold", &w), ("merge_each", &out.weight)] {
            let e = rel_err(got, want_w);
            assert!(e <= TOL, "{} {label} weight: rel err {e:e}", case.name);
            let k = worst.entry("merged weight".into()).or_default();
            *k = k.max(e);
        }
        assert_eq!(
            out.bias.is_some(),
            case.out_bias,
            "{}: bias presence",
            case.name
        );
        assert_eq!(b.is_some(), case.out_bias, "{}: bias presence", case.name);
        if case.out_bias {
            let want_b = get(&t, &format!("{}/out_bias", case.name));
            for got in [b.as_ref(), out.bias.as_ref()].into_iter().flatten() {
                let e = rel_err(got, want_b);
                assert!(e <= TOL, "{} bias: rel err {e:e}", case.name);
            }
        }
        let (sw, sb) = merge(weight, bias, &with).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(rel_err(&sw, want_w) <= TOL, "{}: merge", case.name);
        assert_eq!(sb.is_some(), case.out_bias, "{}: merge bias", case.name);
    }
    eprintln!("max relative errors (updown vs max(|updown|, |W|); merged weight): {worst:#?}");
    eprintln!("max updown errors relative to |updown| alone: {plain:#?}");
    for kind in [
        "Lora", "Hada", "Ia3", "Lokr", "Full", "Norm", "GLora", "OFT",
    ] {
        assert!(
            worst.contains_key(&format!("NetworkModule{kind}")),
            "no case of {kind}"
        );
    }
}

#[test]
fn what_a1111_refuses_is_an_error_at_the_same_stage() {
    let Fixture {
        refusals,
        tensors: t,
        ..
    } = load();
    for r in &refusals {
        let weight = get(&t, &format!("{}/weight", r.name));
        let bias = r.bias.then(|| get(&t, &format!("{}/bias", r.name)));
        let loaded = NetworkModule::from_tensors(&parts(&r.name, 0, &r.parts, &t));
        let module = match (r.stage.as_str(), loaded) {
            ("load", Err(_)) => continue,
            (_, Err(e)) => panic!(
                "{} ({}): refused at load ({e}), A1111 at {}",
                r.name, r.layer, r.stage
            ),
            (_, Ok(None)) => panic!("{}: no module type", r.name),
            (_, Ok(Some(m))) => m,
        };
        let fits = module.check_layer(weight.dims());
        match r.stage.as_str() {
            "load" => assert!(
                fits.is_err(),
                "{} ({}): A1111 fails the load",
                r.name,
                r.layer
            ),
            "apply" => {
                assert!(
                    fits.is_ok(),
                    "{} ({}): A1111 loads it: {fits:?}",
                    r.name,
                    r.layer
                );
                let merged = merge(weight, bias, &[(&module, 1.0, None)]);
                assert!(
                    merged.is_err(),
                    "{} ({}): A1111 fails to apply it",
                    r.name,
                    r.layer
                );
                let out = merge_each(weight, bias, &[(&module, 1.0, None)]).unwrap();
                assert_eq!(out.failures.len(), 1, "{}", r.name);
                // What A1111 leaves: the weight as it was, or merged where only the bias failed.
                let want = get(&t, &format!("{}/out_weight", r.name));
                let e = rel_err(&out.weight, want);
                assert!(
                    e <= TOL,
                    "{}: the weight A1111 leaves: rel err {e:e}",
                    r.name
                );
            }
            other => panic!("{}: unknown stage {other}", r.name),
        }
    }
}
