//! Network files read against the tiny SD1 and SD2 models (materialised from
//! `fixtures/tiny/*/manifest.json`, written by tools/reference/make_tiny_models.py): A1111's
//! key matching (`load_network` in `extensions-builtin/Lora/networks.py` v1.10.1) on network
//! files written here byte by byte.

#[allow(dead_code)] // the crafted-archive helpers; not all are used here
mod bomb_files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bomb_files::{binunicode, ints, long1, write_zip};
use sumi_weights::lora::{
    read_network, AttentionPart, Inert, LoadedNetwork, TargetIndex, MAX_NETWORK_TENSORS,
};
use sumi_weights::safetensors::serialize;
use sumi_weights::{Family, StorageDtype, Weights, WeightsError};

type T = (String, StorageDtype, Vec<usize>, Vec<u8>);

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16s(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// A tensor of `shape` with values 0.5, 1.0, 1.5, … stored as f16.
fn t(name: &str, shape: &[usize]) -> T {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (1..=n).map(|i| i as f32 * 0.5).collect();
    (name.into(), StorageDtype::F16, shape.to_vec(), f16s(&v))
}

/// A kohya LoRA module: `lora_up.weight`, `lora_down.weight`, `alpha`.
fn lora(module: &str) -> Vec<T> {
    vec![
        t(&format!("{module}.lora_up.weight"), &[64, 2]),
        t(&format!("{module}.lora_down.weight"), &[2, 64]),
        (
            format!("{module}.alpha"),
            StorageDtype::F32,
            vec![],
            f32s(&[8.0]),
        ),
    ]
}

fn write(dir: &Path, name: &str, tensors: Vec<T>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serialize(&tensors, &BTreeMap::new())).unwrap();
    p
}

fn index(arch: &str, family: Family, dir: &Path) -> TargetIndex {
    let w = Weights::open(&sumi_testkit::tiny_model(arch, dir)).unwrap();
    TargetIndex::new(w.names(), family)
}

/// (canonical module, sd_key, network parts) of each target.
fn summary(n: &LoadedNetwork) -> Vec<(String, String, Vec<String>)> {
    n.targets
        .iter()
        .map(|t| {
            (
                t.module.clone(),
                t.sd_key.clone(),
                t.tensors.keys().cloned().collect(),
            )
        })
        .collect()
}

fn parts(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn kohya_unet_keys_in_both_spellings_land_on_their_layers() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let mut ts = lora("lora_unet_down_blocks_0_attentions_0_proj_in");
    // the compvis spelling of the same layer joins the module; its alpha (later in key order)
    // replaces the first one, as a dict assignment does
    ts.push((
        "lora_unet_input_blocks_1_1_proj_in.alpha".into(),
        StorageDtype::BF16,
        vec![],
        half::bf16::from_f32(4.0).to_le_bytes().to_vec(),
    ));
    ts.extend(lora("lora_unet_down_blocks_1_resnets_0_conv1"));
    ts.extend(lora(
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
    ));
    ts.extend(lora("lora_unet_up_blocks_1_upsamplers_0_conv"));
    ts.extend(lora("lora_unet_time_embedding_linear_1"));
    ts.extend(lora("lora_unet_input_blocks_4_0_emb_layers_1"));
    let n = read_network(&write(d.path(), "unet.safetensors", ts), &ix).unwrap();
    assert!(n.unmatched.is_empty(), "{:?}", n.unmatched);
    assert!(n.inert.is_empty());
    let all = parts(&["alpha", "lora_down.weight", "lora_up.weight"]);
    // targets in the order of their first key (the file's keys sorted)
    assert_eq!(
        summary(&n),
        vec![
            (
                "unet.down_blocks.0.attentions.0.proj_in".into(),
                "diffusion_model_input_blocks_1_1_proj_in".into(),
                all.clone()
            ),
            (
                "unet.down_blocks.1.resnets.0.conv1".into(),
                "diffusion_model_input_blocks_4_0_in_layers_2".into(),
                all.clone()
            ),
            (
                "unet.down_blocks.1.resnets.0.time_emb_proj".into(),
                "diffusion_model_input_blocks_4_0_emb_layers_1".into(),
                all.clone()
            ),
            (
                "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k".into(),
                "diffusion_model_middle_block_1_transformer_blocks_0_attn2_to_k".into(),
                all.clone()
            ),
            (
                "unet.time_embedding.linear_1".into(),
                "diffusion_model_time_embed_0".into(),
                all.clone()
            ),
            (
                "unet.up_blocks.1.upsamplers.0.conv".into(),
                "diffusion_model_output_blocks_5_2_conv".into(),
                all.clone()
            ),
        ]
    );
    let proj_in = &n.targets[0];
    assert_eq!(
        proj_in.network_key,
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha"
    );
    assert!(!proj_in.text_encoder);
    assert_eq!(proj_in.attention, None);
    assert_eq!(values(&proj_in.tensors["alpha"]), [4.0]);
    let up = &proj_in.tensors["lora_up.weight"];
    assert_eq!(up.dims(), [64, 2]);
    assert_eq!(up.dtype(), candle_core::DType::F32);
    assert_eq!(values(up)[..3], [0.5, 1.0, 1.5]);
    assert_eq!(values(&n.targets[1].tensors["alpha"]), [8.0]);
}

#[test]
fn text_encoder_keys_and_sdxl_keys_on_sd1() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let mut ts = lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj");
    // SDXL's first text encoder: A1111 falls back to `transformer_text_model` on SD1
    ts.extend(lora("lora_te1_text_model_encoder_layers_1_mlp_fc1"));
    // SDXL's second text encoder and SDXL-only U-Net layers: no such module on SD1
    ts.extend(lora("lora_te2_text_model_encoder_layers_0_mlp_fc1"));
    ts.extend(lora(
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_q",
    ));
    ts.extend(lora(
        "lora_unet_input_blocks_7_1_transformer_blocks_5_attn2_to_k",
    ));
    // the VAE is not among A1111's modules
    ts.push(t("first_stage_model_decoder_conv_in.diff", &[4]));
    let n = read_network(&write(d.path(), "te.safetensors", ts), &ix).unwrap();
    let all = parts(&["alpha", "lora_down.weight", "lora_up.weight"]);
    // keys sorted: `lora_te1_…` before `lora_te_…`
    assert_eq!(
        summary(&n),
        vec![
            (
                "text_encoder.encoder.layers.1.mlp.fc1".into(),
                "transformer_text_model_encoder_layers_1_mlp_fc1".into(),
                all.clone()
            ),
            (
                "text_encoder.encoder.layers.0.self_attn.q_proj".into(),
                "transformer_text_model_encoder_layers_0_self_attn_q_proj".into(),
                all.clone()
            ),
        ]
    );
    assert!(n.targets.iter().all(|t| t.text_encoder));
    assert_eq!(n.unmatched.len(), 10);
    assert_eq!(n.unmatched[0], "first_stage_model_decoder_conv_in.diff");
    assert_eq!(
        n.unmatched[1],
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha"
    );
    assert!(n.unmatched[4..7]
        .iter()
        .all(|k| k.starts_with("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_")));
    assert!(n.unmatched[7..]
        .iter()
        .all(|k| k.starts_with("lora_unet_input_blocks_7_1_transformer_blocks_5_")));
}

#[test]
fn lycoris_parts_group_with_their_module() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let hada = "lora_unet_down_blocks_0_attentions_0_proj_out";
    let lokr = "lora_unet_up_blocks_3_resnets_2_conv_shortcut";
    let full = "lora_te_text_model_encoder_layers_2_mlp_fc2";
    let norm = "lora_unet_down_blocks_0_attentions_0_norm";
    let oft = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2";
    let ts = vec![
        t(&format!("{hada}.hada_w1_a"), &[64, 2]),
        t(&format!("{hada}.hada_w1_b"), &[2, 64]),
        t(&format!("{hada}.hada_w2_a"), &[64, 2]),
        t(&format!("{hada}.hada_w2_b"), &[2, 64]),
        t(&format!("{hada}.alpha"), &[]),
        t(&format!("{hada}.dora_scale"), &[64, 1]),
        t(&format!("{lokr}.lokr_w1"), &[4, 4]),
        t(&format!("{lokr}.lokr_w2_a"), &[16, 2]),
        t(&format!("{lokr}.lokr_w2_b"), &[2, 16]),
        t(&format!("{full}.diff"), &[64, 256]),
        t(&format!("{full}.diff_b"), &[64]),
        t(&format!("{norm}.w_norm"), &[64]),
        t(&format!("{norm}.b_norm"), &[64]),
        t(&format!("{oft}.oft_diag"), &[4, 16, 16]),
        // kohya's OFT names compvis layers under `oft_unet`
        t("oft_unet_input_blocks_1_1_proj_in.oft_blocks", &[4, 16, 16]),
        t("oft_unet_input_blocks_1_1_proj_in.alpha", &[]),
    ];
    let n = read_network(&write(d.path(), "lyco.safetensors", ts), &ix).unwrap();
    assert!(n.unmatched.is_empty(), "{:?}", n.unmatched);
    let s = summary(&n);
    let find = |m: &str| s.iter().find(|t| t.0 == m).unwrap().2.clone();
    assert_eq!(
        find("unet.down_blocks.0.attentions.0.proj_out"),
        parts(&[
            "alpha",
            "dora_scale",
            "hada_w1_a",
            "hada_w1_b",
            "hada_w2_a",
            "hada_w2_b"
        ])
    );
    assert_eq!(
        find("unet.up_blocks.3.resnets.2.conv_shortcut"),
        parts(&["lokr_w1", "lokr_w2_a", "lokr_w2_b"])
    );
    assert_eq!(
        find("text_encoder.encoder.layers.2.mlp.fc2"),
        parts(&["diff", "diff_b"])
    );
    assert_eq!(
        find("unet.down_blocks.0.attentions.0.norm"),
        parts(&["b_norm", "w_norm"])
    );
    assert_eq!(
        find("unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"),
        parts(&["oft_diag"])
    );
    assert_eq!(
        find("unet.down_blocks.0.attentions.0.proj_in"),
        parts(&["alpha", "oft_blocks"])
    );
    assert_eq!(n.targets.len(), 6);
}

#[test]
fn sd2_open_clip_attention_needs_all_four_parts() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd2", Family::Sd2, d.path());
    let mut ts = Vec::new();
    for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        ts.extend(lora(&format!(
            "lora_te_text_model_encoder_layers_0_self_attn_{p}"
        )));
    }
    // layer 1 without out_proj: A1111 applies none of the three
    for p in ["q_proj", "k_proj", "v_proj"] {
        ts.extend(lora(&format!(
            "lora_te_text_model_encoder_layers_1_self_attn_{p}"
        )));
    }
    ts.extend(lora("lora_te_text_model_encoder_layers_2_mlp_fc1"));
    // the last resblock: matched, never run by SD2
    ts.extend(lora("lora_te_text_model_encoder_layers_3_mlp_fc1"));
    ts.extend(lora("lora_unet_down_blocks_0_attentions_0_proj_in"));
    let n = read_network(&write(d.path(), "sd2.safetensors", ts), &ix).unwrap();
    assert!(n.unmatched.is_empty(), "{:?}", n.unmatched);
    let got: Vec<(&str, &str, Option<AttentionPart>, bool)> = n
        .targets
        .iter()
        .map(|t| {
            (
                t.module.as_str(),
                t.sd_key.as_str(),
                t.attention,
                t.text_encoder,
            )
        })
        .collect();
    let l0 = "text_encoder.encoder.layers.0.self_attn";
    assert_eq!(
        got,
        [
            (
                &*format!("{l0}.k_proj"),
                "model_transformer_resblocks_0_attn_k_proj",
                Some(AttentionPart::K),
                true
            ),
            (
                &*format!("{l0}.out_proj"),
                "model_transformer_resblocks_0_attn_out_proj",
                Some(AttentionPart::Out),
                true
            ),
            (
                &*format!("{l0}.q_proj"),
                "model_transformer_resblocks_0_attn_q_proj",
                Some(AttentionPart::Q),
                true
            ),
            (
                &*format!("{l0}.v_proj"),
                "model_transformer_resblocks_0_attn_v_proj",
                Some(AttentionPart::V),
                true
            ),
            (
                "text_encoder.encoder.layers.2.mlp.fc1",
                "model_transformer_resblocks_2_mlp_c_fc",
                None,
                true
            ),
            (
                "unet.down_blocks.0.attentions.0.proj_in",
                "diffusion_model_input_blocks_1_1_proj_in",
                None,
                false
            ),
        ]
    );
    let inert: Vec<(&str, Inert)> = n
        .inert
        .iter()
        .map(|m| (m.sd_key.as_str(), m.reason))
        .collect();
    assert_eq!(
        inert,
        [
            (
                "model_transformer_resblocks_1_attn_k_proj",
                Inert::IncompleteAttention
            ),
            (
                "model_transformer_resblocks_1_attn_q_proj",
                Inert::IncompleteAttention
            ),
            (
                "model_transformer_resblocks_1_attn_v_proj",
                Inert::IncompleteAttention
            ),
            ("model_transformer_resblocks_3_mlp_c_fc", Inert::UnusedLayer),
        ]
    );
    assert_eq!(n.inert[0].tensors.len(), 3);
}

#[test]
fn bundled_embeddings_are_grouped_as_a1111_does() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let mut ts = lora("lora_unet_down_blocks_0_attentions_0_proj_in");
    ts.push(t("bundle_emb.style.string_to_param.*", &[2, 64]));
    ts.push(t("bundle_emb.concept.emb_params", &[64]));
    ts.push(t("bundle_emb.xl.clip_g", &[1, 80]));
    ts.push(t("bundle_emb.xl.clip_l", &[1, 64]));
    let n = read_network(&write(d.path(), "bundle.safetensors", ts), &ix).unwrap();
    assert!(n.unmatched.is_empty(), "{:?}", n.unmatched);
    assert_eq!(n.targets.len(), 1);
    type Row<'a> = (&'a str, Vec<String>, Option<Vec<usize>>);
    let e: Vec<Row> = n
        .bundled_embeddings
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.tensors.keys().cloned().collect(),
                e.vectors.as_ref().map(|v| v.dims().to_vec()),
            )
        })
        .collect();
    assert_eq!(
        e,
        [
            ("concept", parts(&["emb_params"]), Some(vec![1, 64])),
            ("style", parts(&["string_to_param.*"]), Some(vec![2, 64])),
            ("xl", parts(&["clip_g", "clip_l"]), None),
        ]
    );
    assert_eq!(
        values(n.bundled_embeddings[1].vectors.as_ref().unwrap())[..2],
        [0.5, 1.0]
    );

    // two terms, a key without a vector name: A1111 fails the whole network
    for (name, keys, detail) in [
        (
            "two.safetensors",
            ["bundle_emb.e.a", "bundle_emb.e.b"],
            "bundled embedding `e` has 2 terms in it",
        ),
        (
            "nodot.safetensors",
            ["bundle_emb.e", "lora_unet_conv_in.diff"],
            "has no `.<vector>` part",
        ),
        (
            "s2p.safetensors",
            ["bundle_emb.e.string_to_param", "lora_unet_conv_in.diff"],
            "has no `string_to_param.<term>`",
        ),
    ] {
        let p = write(d.path(), name, keys.iter().map(|k| t(k, &[64])).collect());
        match read_network(&p, &ix) {
            Err(WeightsError::BadNetwork { path, detail: got }) => {
                assert_eq!(path, p);
                assert!(got.contains(detail), "{got}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A `torch.save`d state dict: `{key: tensor}` over one FloatStorage per tensor, then
/// `{int_key: 7}`; wrapped in `{"state_dict": …}` when `wrapped`.
fn torch_file(
    dir: &Path,
    name: &str,
    tensors: &[(&str, &[f32], &[i64])],
    int_key: &str,
    wrapped: bool,
) -> PathBuf {
    let mut p = vec![0x80, 0x02, b'}'];
    if wrapped {
        binunicode(&mut p, "state_dict");
        p.push(b'}');
    }
    let mut records = Vec::new();
    for (i, (key, vals, shape)) in tensors.iter().enumerate() {
        binunicode(&mut p, key);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        binunicode(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        binunicode(&mut p, &i.to_string());
        binunicode(&mut p, "cpu");
        long1(&mut p, vals.len() as i64);
        p.extend_from_slice(b"tQ");
        long1(&mut p, 0);
        ints(&mut p, shape);
        let mut stride = vec![1i64; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        ints(&mut p, &stride);
        p.extend_from_slice(&[0x89, b't', b'R', b's']);
        records.push((i.to_string(), f32s(vals)));
    }
    binunicode(&mut p, int_key);
    long1(&mut p, 7);
    p.push(b's');
    if wrapped {
        p.push(b's');
    }
    p.push(b'.');
    let recs: Vec<(&str, &[u8], bool)> = records
        .iter()
        .map(|(k, b)| (k.as_str(), b.as_slice(), false))
        .collect();
    write_zip(dir, name, &p, &recs)
}

#[test]
fn torch_files_are_read_through_the_restricted_pickle_reader() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let m = "lora_unet_down_blocks_0_attentions_0_proj_in";
    let (up, down, alpha) = (
        format!("{m}.lora_up.weight"),
        format!("{m}.lora_down.weight"),
        format!("{m}.alpha"),
    );
    let up_v: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let tensors: [(&str, &[f32], &[i64]); 4] = [
        (&up, &up_v, &[64, 2]),
        (&down, &up_v, &[2, 64]),
        (&alpha, &[2.0], &[]),
        ("lora_te2_x.diff", &[1.0], &[1]),
    ];
    for wrapped in [false, true] {
        let p = torch_file(d.path(), "net.pt", &tensors, "notes.step", wrapped);
        let n = read_network(&p, &ix).unwrap();
        assert_eq!(n.targets.len(), 1);
        let t = &n.targets[0];
        assert_eq!(t.module, "unet.down_blocks.0.attentions.0.proj_in");
        assert_eq!(values(&t.tensors["alpha"]), [2.0]);
        assert_eq!(values(&t.tensors["lora_up.weight"])[..3], [0.0, 1.0, 2.0]);
        // in file order, the int entry included
        assert_eq!(n.unmatched, ["lora_te2_x.diff", "notes.step"]);
        assert_eq!(n.inert.len(), 0);
    }
    // an int where a layer's part should be: A1111 fails on `.item()`/`.shape`
    let p = torch_file(
        d.path(),
        "int.pt",
        &tensors[..1],
        "lora_unet_conv_out.step",
        false,
    );
    match read_network(&p, &ix) {
        Err(WeightsError::BadNetwork { path, detail }) => {
            assert_eq!(path, p);
            assert_eq!(
                detail,
                "`lora_unet_conv_out.step` is Int(7), not a tensor (A1111 fails on it)"
            );
        }
        other => panic!("{other:?}"),
    }
}

fn refusal(p: &Path, ix: &TargetIndex) -> String {
    let e = read_network(p, ix).expect_err("refused");
    let s = e.to_string();
    assert!(s.starts_with(&p.display().to_string()), "{s}");
    s
}

#[test]
fn garbage_truncated_and_oversized_files_are_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for name in ["garbage.safetensors", "garbage.pt", "garbage.ckpt"] {
        let p = d.path().join(name);
        std::fs::write(&p, &garbage).unwrap();
        refusal(&p, &ix);
    }
    let empty = d.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(refusal(&empty, &ix).contains("too short"));
    let good = write(
        d.path(),
        "good.safetensors",
        lora("lora_unet_down_blocks_0_attentions_0_proj_in"),
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = d.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(refusal(&cut, &ix).contains("truncated"));
    let cut_pt = torch_file(
        d.path(),
        "cut.pt",
        &[("lora_unet_conv_in.diff", &[1.0; 8], &[8])],
        "notes.step",
        false,
    );
    let b = std::fs::read(&cut_pt).unwrap();
    std::fs::write(&cut_pt, &b[..b.len() / 2]).unwrap();
    refusal(&cut_pt, &ix);
    let missing = d.path().join("missing.safetensors");
    refusal(&missing, &ix);
    // more tensors than the limit (empty tensors: a small file)
    let many: Vec<T> = (0..=MAX_NETWORK_TENSORS)
        .map(|i| (format!("k{i}.w"), StorageDtype::F16, vec![0], Vec::new()))
        .collect();
    let p = write(d.path(), "many.safetensors", many);
    assert!(refusal(&p, &ix).ends_with("100001 tensors, more than the limit of 100000"));
    // a key A1111's name conversion raises on (`int("1x")`)
    let p = write(
        d.path(),
        "int.safetensors",
        vec![t("lora_unet_up_blocks_0_resnets_1_1x.diff", &[1])],
    );
    assert!(refusal(&p, &ix).contains("invalid literal for int()"));
}

#[test]
fn a_network_of_unmatched_keys_only_reads_as_empty() {
    let d = tempfile::tempdir().unwrap();
    let ix = index("sd1", Family::Sd1, d.path());
    let p = write(d.path(), "none.safetensors", lora("lora_te2_text_model_x"));
    let n = read_network(&p, &ix).unwrap();
    assert!(n.targets.is_empty() && n.inert.is_empty() && n.bundled_embeddings.is_empty());
    assert_eq!(n.unmatched.len(), 3);
}
