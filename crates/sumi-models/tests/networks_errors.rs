//! `sumi_models::networks` on network parts that do not fit each other or the layer: each is a
//! `ModelError::Network` naming the module type and the part (never a panic, never an
//! allocation past the layer), where A1111 v1.10.1 raises; and the A1111 rules that decide
//! which parts count (type order, PEFT dropping `alpha`, OFT ignoring `scale`).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use sumi_models::networks::{factorization, merge, merge_each, ModuleKind, NetworkModule};
use sumi_models::ModelError;
use sumi_testkit::rel_err;

/// A tensor of `shape` with deterministic, distinct values.
fn t(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u32 + 1) * 2654435761u32.wrapping_add(seed)) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn scalar(v: f32) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn parts(list: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn module(list: &[(&str, Tensor)]) -> NetworkModule {
    NetworkModule::from_tensors(&parts(list))
        .unwrap()
        .expect("a module type")
}

/// Asserts a `Network` error from `module` naming `part`.
fn assert_network_err<T: std::fmt::Debug>(r: sumi_models::Result<T>, module: &str, part: &str) {
    match r {
        Err(ModelError::Network {
            module: m,
            part: p,
            detail,
        }) => {
            assert_eq!((m, p.as_str()), (module, part), "{detail}");
        }
        other => panic!("expected a {module} error on {part}, got {other:?}"),
    }
}

#[test]
fn detection_follows_a1111s_type_order() {
    assert!(NetworkModule::from_tensors(&parts(&[("foo", t(&[2], 1))]))
        .unwrap()
        .is_none());
    let both = module(&[
        ("lora_up.weight", t(&[8, 2], 1)),
        ("lora_down.weight", t(&[2, 6], 2)),
        ("hada_w1_a", t(&[8, 2], 3)),
        ("hada_w1_b", t(&[2, 6], 4)),
        ("hada_w2_a", t(&[8, 2], 5)),
        ("hada_w2_b", t(&[2, 6], 6)),
    ]);
    assert_eq!(both.kind(), ModuleKind::Lora);
    // `weight` makes it IA3 (tried before full), whose missing `on_input` fails the load.
    let r = NetworkModule::from_tensors(&parts(&[("weight", t(&[8], 1)), ("diff", t(&[8, 6], 2))]));
    assert_network_err(r, "IA3", "on_input");
    let glora_without_alpha = parts(&[
        ("a1.weight", t(&[2, 6], 1)),
        ("a2.weight", t(&[6, 2], 2)),
        ("b1.weight", t(&[2, 6], 3)),
        ("b2.weight", t(&[8, 2], 4)),
    ]);
    assert!(NetworkModule::from_tensors(&glora_without_alpha)
        .unwrap()
        .is_none());
    let oft = module(&[
        ("oft_blocks", t(&[2, 4, 4], 1)),
        ("oft_diag", t(&[2, 4, 4], 2)),
    ]);
    assert_eq!(oft.kind(), ModuleKind::Oft);
}

#[test]
fn unreadable_parts_are_refused() {
    let empty = Tensor::zeros((0, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
    let r = NetworkModule::from_tensors(&parts(&[
        ("lora_up.weight", t(&[8, 2], 1)),
        ("lora_down.weight", empty),
    ]));
    assert_network_err(r, "LoRA", "lora_down.weight");
    let r = NetworkModule::from_tensors(&parts(&[
        ("lora_up.weight", t(&[8, 2], 1)),
        ("lora_down.weight", t(&[2, 6], 2)),
        ("alpha", t(&[2], 3)),
    ]));
    assert_network_err(r, "LoRA", "alpha");
}

#[test]
fn lora_shapes_are_checked() {
    let w = t(&[8, 6], 9);
    let m = module(&[
        ("lora_up.weight", t(&[8, 4], 1)),
        ("lora_down.weight", t(&[3, 6], 2)),
    ]);
    assert_network_err(m.calc_updown(&w, 1.0, None), "LoRA", "lora_up.weight");
    // A norm layer: A1111's "unsupported type" (the whole network fails to load).
    let m = module(&[
        ("lora_up.weight", t(&[8, 2], 1)),
        ("lora_down.weight", t(&[2, 8], 2)),
    ]);
    assert_network_err(m.check_layer(&[8]), "LoRA", "layer");
    assert_network_err(m.calc_updown(&t(&[8], 3), 1.0, None), "LoRA", "layer");
    // A 3-d down on a conv layer; a 3x3 down on a 1x1 conv.
    let m = module(&[
        ("lora_up.weight", t(&[8, 2, 1, 1], 1)),
        ("lora_down.weight", t(&[2, 6, 3], 2)),
    ]);
    assert_network_err(m.check_layer(&[8, 6, 3, 3]), "LoRA", "lora_down.weight");
    let m = module(&[
        ("lora_up.weight", t(&[8, 2, 1, 1], 1)),
        ("lora_down.weight", t(&[2, 6, 3, 3], 2)),
    ]);
    assert_network_err(
        m.calc_updown(&t(&[8, 6, 1, 1], 3), 1.0, None),
        "LoRA",
        "lora_down.weight",
    );
    // lora_mid (Tucker) needs a conv layer.
    let m = module(&[
        ("lora_up.weight", t(&[8, 2], 1)),
        ("lora_down.weight", t(&[2, 6], 2)),
        ("lora_mid.weight", t(&[2, 2, 3, 3], 3)),
    ]);
    assert_network_err(m.calc_updown(&w, 1.0, None), "LoRA", "lora_mid.weight");
}

#[test]
fn an_update_larger_than_the_layer_is_refused_before_it_is_made() {
    // up @ down would be 100000 x 100000 floats (40 GB) for an 8x6 layer.
    let m = module(&[
        ("lora_up.weight", t(&[100_000, 1], 1)),
        ("lora_down.weight", t(&[1, 100_000], 2)),
    ]);
    let r = m.calc_updown(&t(&[8, 6], 3), 1.0, None);
    assert_network_err(r, "LoRA", "lora_up.weight");
    let m = module(&[
        ("lokr_w1", t(&[1000, 1000], 1)),
        ("lokr_w2", t(&[1000, 1000], 2)),
    ]);
    assert_network_err(m.calc_updown(&t(&[8, 6], 3), 1.0, None), "LoKr", "lokr_w2");
}

#[test]
fn lokr_kron_must_fit_the_layer() {
    let m = module(&[("lokr_w1", t(&[2, 2], 1)), ("lokr_w2", t(&[3, 3, 3, 3], 2))]);
    assert_network_err(
        m.calc_updown(&t(&[8, 6, 3, 3], 3), 1.0, None),
        "LoKr",
        "lokr_w2",
    );
    // On a linear layer A1111's calc_updown returns the 6x6 product; adding it to the 8x6
    // weight is what fails.
    let m = module(&[("lokr_w1", t(&[2, 2], 1)), ("lokr_w2", t(&[3, 3], 2))]);
    let w = t(&[8, 6], 3);
    let (updown, _) = m.calc_updown(&w, 1.0, None).unwrap();
    assert_eq!(updown.dims(), [6, 6]);
    assert_network_err(merge(&w, None, &[(&m, 1.0, None)]), "LoKr", "updown");
    let m = module(&[
        ("lokr_w1_a", t(&[2, 3], 1)),
        ("lokr_w1_b", t(&[2, 3], 2)),
        ("lokr_w2", t(&[4, 3], 3)),
    ]);
    assert_network_err(m.calc_updown(&w, 1.0, None), "LoKr", "lokr_w1_a");
}

#[test]
fn oft_blocks_must_cover_the_output_rows() {
    let w = t(&[8, 6], 9);
    for (part, shape) in [
        ("oft_blocks", vec![3, 4, 4]),
        ("oft_diag", vec![2, 3, 3]),
        ("oft_blocks", vec![2, 4, 3]),
    ] {
        let m = module(&[(part, t(&shape, 1))]);
        assert_network_err(m.calc_updown(&w, 1.0, None), "OFT", part);
    }
    // BOFT: 3 blocks of 4 where the 8 rows make 2.
    let m = module(&[("oft_blocks", t(&[2, 3, 4, 4], 1))]);
    assert_network_err(m.calc_updown(&w, 1.0, None), "OFT", "oft_blocks");
    let m = module(&[("oft_blocks", t(&[2, 4, 4], 1))]);
    assert_network_err(m.check_layer(&[8]), "OFT", "layer");
    let m = module(&[("oft_blocks", t(&[2, 4, 4], 1)), ("rescale", t(&[3], 2))]);
    assert_network_err(m.calc_updown(&w, 1.0, None), "OFT", "rescale");
}

#[test]
fn other_types_shapes_are_checked() {
    // IA3's output scale reshaped to [out, 1] does not broadcast over a 3x3 conv weight (as in A1111).
    let m = module(&[("weight", t(&[8], 1)), ("on_input", scalar(0.0))]);
    assert_network_err(
        m.calc_updown(&t(&[8, 6, 3, 3], 2), 1.0, None),
        "IA3",
        "weight",
    );
    let m = module(&[
        ("a1.weight", t(&[2, 6, 1, 1], 1)),
        ("a2.weight", t(&[6, 2, 1, 1], 2)),
        ("b1.weight", t(&[2, 6, 1, 1], 3)),
        ("b2.weight", t(&[8, 2, 1, 1], 4)),
        ("alpha", scalar(1.0)),
    ]);
    assert_network_err(
        m.calc_updown(&t(&[8, 6, 1, 1], 5), 1.0, None),
        "GLoRA",
        "layer",
    );
    let m = module(&[
        ("hada_w1_a", t(&[2, 8], 1)),
        ("hada_w1_b", t(&[2, 6], 2)),
        ("hada_w2_a", t(&[8, 2], 3)),
        ("hada_w2_b", t(&[2, 6], 4)),
        ("hada_t1", t(&[3, 2, 3, 3], 5)),
    ]);
    assert_network_err(
        m.calc_updown(&t(&[8, 6, 3, 3], 6), 1.0, None),
        "LoHa",
        "hada_t1",
    );
    // DoRA needs a weight of two dimensions at least.
    let m = module(&[("diff", t(&[8], 1)), ("dora_scale", t(&[8], 2))]);
    assert_network_err(m.calc_updown(&t(&[8], 3), 1.0, None), "full", "dora_scale");
    // An ex_bias that cannot be the layer's bias.
    let m = module(&[("diff", t(&[8, 6], 1)), ("diff_b", t(&[3], 2))]);
    assert_network_err(
        merge(&t(&[8, 6], 3), None, &[(&m, 1.0, None)]),
        "full",
        "ex_bias",
    );
    assert_network_err(
        merge(&t(&[8, 6], 3), Some(&t(&[8], 4)), &[(&m, 1.0, None)]),
        "full",
        "ex_bias",
    );
}

#[test]
fn an_inpainting_conv_in_takes_only_4_channel_updates() {
    // A LoRA trained for 9 input channels: A1111 pads its update to 14 and the add fails.
    let m = module(&[
        ("lora_up.weight", t(&[8, 2, 1, 1], 1)),
        ("lora_down.weight", t(&[2, 9, 3, 3], 2)),
    ]);
    let w = t(&[8, 9, 3, 3], 3);
    assert_network_err(merge(&w, None, &[(&m, 1.0, None)]), "LoRA", "updown");
}

#[test]
fn merge_each_skips_a_failing_network_as_a1111_does() {
    let w = t(&[8, 6], 1);
    let b = t(&[8], 2);
    let first = module(&[
        ("lora_up.weight", t(&[8, 2], 3)),
        ("lora_down.weight", t(&[2, 6], 4)),
    ]);
    let bad = module(&[
        ("lora_up.weight", t(&[8, 2], 5)),
        ("lora_down.weight", t(&[3, 6], 6)),
    ]);
    let third = module(&[("diff", t(&[8, 6], 7)), ("diff_b", t(&[8], 8))]);
    let out = merge_each(
        &w,
        Some(&b),
        &[(&first, 0.5, None), (&bad, 1.0, None), (&third, 2.0, None)],
    )
    .unwrap();
    assert_eq!(
        out.failures.iter().map(|f| f.index).collect::<Vec<_>>(),
        [1]
    );
    let (want_w, want_b) =
        merge(&w, Some(&b), &[(&first, 0.5, None), (&third, 2.0, None)]).unwrap();
    assert_eq!(rel_err(&out.weight, &want_w), 0.0);
    assert_eq!(
        rel_err(out.bias.as_ref().unwrap(), want_b.as_ref().unwrap()),
        0.0
    );
    assert!(merge(&w, Some(&b), &[(&first, 0.5, None), (&bad, 1.0, None)]).is_err());
    // A failing bias keeps the network's weight update (A1111 copies the weight first).
    let bad_bias = module(&[("diff", t(&[8, 6], 9)), ("diff_b", t(&[3], 10))]);
    let out = merge_each(&w, Some(&b), &[(&bad_bias, 1.0, None)]).unwrap();
    assert_eq!(out.failures.len(), 1);
    let want = (&w + &t(&[8, 6], 9)).unwrap();
    assert_eq!(rel_err(&out.weight, &want), 0.0);
    assert_eq!(rel_err(out.bias.as_ref().unwrap(), &b), 0.0);
}

#[test]
fn parts_a1111_drops_do_not_count() {
    let w = t(&[8, 6], 1);
    let (up, down) = (t(&[8, 2], 2), t(&[2, 6], 3));
    let product = up.matmul(&down).unwrap();
    // PEFT lora_A/lora_B: A1111 clears the parts, so alpha (and dora_scale) are dropped.
    let peft = module(&[
        ("lora_B.weight", up.clone()),
        ("lora_A.weight", down.clone()),
        ("alpha", scalar(100.0)),
    ]);
    let (u, _) = peft.calc_updown(&w, 1.0, None).unwrap();
    assert!(rel_err(&u, &product) < 1e-7);
    // The same with kohya names: alpha / dim = 50.
    let kohya = module(&[
        ("lora_up.weight", up),
        ("lora_down.weight", down),
        ("alpha", scalar(100.0)),
    ]);
    let (u, _) = kohya.calc_updown(&w, 1.0, None).unwrap();
    assert!(rel_err(&u, &(product * 50.0).unwrap()) < 1e-6);
    // OFT sets scale = 1: a `scale` part changes nothing.
    let blocks = t(&[2, 4, 4], 4);
    let plain = module(&[("oft_blocks", blocks.clone())])
        .calc_updown(&w, 1.0, None)
        .unwrap()
        .0;
    let scaled = module(&[("oft_blocks", blocks), ("scale", scalar(5.0))])
        .calc_updown(&w, 1.0, None)
        .unwrap()
        .0;
    assert_eq!(rel_err(&scaled, &plain), 0.0);
    // GLoRA sets no dim: its alpha never scales.
    let g = |alpha: f32| {
        module(&[
            ("a1.weight", t(&[2, 6], 5)),
            ("a2.weight", t(&[6, 2], 6)),
            ("b1.weight", t(&[2, 6], 7)),
            ("b2.weight", t(&[8, 2], 8)),
            ("alpha", scalar(alpha)),
        ])
        .calc_updown(&w, 1.0, None)
        .unwrap()
        .0
    };
    assert_eq!(rel_err(&g(1.0), &g(64.0)), 0.0);
}

#[test]
fn factorization_matches_lycoris_table() {
    // The table in lyco_helpers.factorization's docstring, as its code computes it (run under
    // Python): for 360 the docstring says (8, 45) at -1 and (12, 30) at 16, the code gives
    // (18, 20) and (15, 24).
    let table: [(usize, [(usize, usize); 5]); 6] = [
        (127, [(1, 127); 5]),
        (128, [(8, 16), (2, 64), (4, 32), (8, 16), (8, 16)]),
        (250, [(10, 25), (2, 125), (2, 125), (5, 50), (10, 25)]),
        (360, [(18, 20), (2, 180), (4, 90), (8, 45), (15, 24)]),
        (512, [(16, 32), (2, 256), (4, 128), (8, 64), (16, 32)]),
        (1024, [(32, 32), (2, 512), (4, 256), (8, 128), (16, 64)]),
    ];
    for (dim, want) in table {
        for (factor, w) in [-1, 2, 4, 8, 16].into_iter().zip(want) {
            assert_eq!(
                factorization(dim, factor),
                w,
                "factorization({dim}, {factor})"
            );
        }
    }
}
