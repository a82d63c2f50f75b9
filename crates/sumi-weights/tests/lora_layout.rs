//! The canonical → LDM name inverse (`layout::ldm::unmap_key`) against `map_key` on every
//! tensor of the tiny SD1 and SD2 checkpoints (materialised from `fixtures/tiny/*/manifest.json`,
//! written by tools/reference/make_tiny_models.py), and the A1111 module table built from it.

use sumi_weights::layout::{ldm, open_clip};
use sumi_weights::lora::{AttentionPart, Inert, Target, TargetIndex};
use sumi_weights::safetensors::SafetensorsFile;
use sumi_weights::{Family, Weights};

/// Every LDM key of the tiny `arch` model maps to canonical names that map back to it (with
/// the same part of a fused tensor), and every canonical name maps back to a key that maps to
/// it. Returns (keys that map to something, canonical names).
fn round_trip(arch: &str, family: Family) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = sumi_testkit::tiny_model(arch, dir.path());
    let file = SafetensorsFile::open(&path).unwrap();
    let keys: Vec<&str> = file.entries().iter().map(|e| e.name.as_str()).collect();
    let layers = open_clip::count_layers(
        keys.iter()
            .filter_map(|k| k.strip_prefix(ldm::OPEN_CLIP_PREFIX)),
    );
    let mut mapped = 0;
    for k in &keys {
        let m = ldm::map_key(k, layers);
        mapped += usize::from(!m.is_empty());
        for c in m {
            let back = ldm::unmap_key(&c.name, family)
                .unwrap_or_else(|| panic!("{arch}: `{}` has no LDM key", c.name));
            assert_eq!(back.name, *k, "{arch}: `{}`", c.name);
            assert_eq!(back.part, c.part, "{arch}: `{}`", c.name);
        }
    }
    let w = Weights::open(&path).unwrap();
    let names: Vec<&str> = w.names().collect();
    for n in &names {
        let back = ldm::unmap_key(n, family).unwrap();
        let again = ldm::map_key(&back.name, layers);
        assert!(
            again.iter().any(|m| m.name == *n && m.part == back.part),
            "{arch}: `{n}` → `{}` → {again:?}",
            back.name
        );
    }
    (mapped, names.len())
}

#[test]
fn canonical_names_map_back_to_their_ldm_keys_sd1() {
    // 979 keys in the tiny SD1 checkpoint; position_ids has no canonical name
    assert_eq!(round_trip("sd1", Family::Sd1), (978, 978));
}

#[test]
fn canonical_names_map_back_to_their_ldm_keys_sd2() {
    // of 981 keys, the 12 of the 4th (last) open_clip resblock, text_projection, logit_scale
    // and alphas_cumprod have no canonical name; each of the 6 fused in_proj
    // tensors gives three
    assert_eq!(round_trip("sd2", Family::Sd2), (966, 978));
}

#[test]
fn the_a1111_module_table_of_the_tiny_models() {
    let dir = tempfile::tempdir().unwrap();
    let sd1 = Weights::open(&sumi_testkit::tiny_model("sd1", dir.path())).unwrap();
    let ix = TargetIndex::new(sd1.names(), Family::Sd1);
    let r = ix
        .resolve("lora_unet_down_blocks_0_attentions_0_proj_in")
        .unwrap()
        .unwrap();
    assert_eq!(r.sd_key, "diffusion_model_input_blocks_1_1_proj_in");
    assert_eq!(
        r.target,
        Target::Layer {
            module: "unet.down_blocks.0.attentions.0.proj_in".into()
        }
    );
    assert!(!r.text_encoder());
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_1_self_attn_out_proj")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.sd_key,
        "transformer_text_model_encoder_layers_1_self_attn_out_proj"
    );
    assert!(r.text_encoder());
    // containers and embeddings are matched and never applied
    let r = ix.resolve("lora_unet_input_blocks_1_1").unwrap().unwrap();
    assert_eq!(r.target, Target::Inert(Inert::Container));
    let r = ix
        .resolve("lora_te1_text_model_embeddings_token_embedding")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.sd_key,
        "transformer_text_model_embeddings_token_embedding"
    );
    assert_eq!(r.target, Target::Inert(Inert::Embedding));
    // a `_q_proj` name whose head is a layer but no OpenCLIP attention: filed, never applied
    let r = ix
        .resolve("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_q_proj")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.sd_key,
        "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_q_proj"
    );
    assert_eq!(r.target, Target::Inert(Inert::NotAttention));
    // the fallbacks do not retry the `_q_proj` rule
    assert_eq!(
        ix.resolve("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_q_proj")
            .unwrap(),
        None
    );
    // the VAE is not in A1111's table
    assert_eq!(
        ix.resolve("first_stage_model_decoder_conv_in").unwrap(),
        None
    );

    let sd2 = Weights::open(&sumi_testkit::tiny_model("sd2", dir.path())).unwrap();
    let ix = TargetIndex::new(sd2.names(), Family::Sd2);
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_2_self_attn_v_proj")
        .unwrap()
        .unwrap();
    assert_eq!(r.sd_key, "model_transformer_resblocks_2_attn_v_proj");
    assert_eq!(
        r.target,
        Target::Attention {
            module: "text_encoder.encoder.layers.2.self_attn.v_proj".into(),
            attention: "model_transformer_resblocks_2_attn".into(),
            part: AttentionPart::V,
        }
    );
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_2_self_attn_out_proj")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.target,
        Target::Attention {
            module: "text_encoder.encoder.layers.2.self_attn.out_proj".into(),
            attention: "model_transformer_resblocks_2_attn".into(),
            part: AttentionPart::Out,
        }
    );
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_2_mlp_fc2")
        .unwrap()
        .unwrap();
    assert_eq!(r.sd_key, "model_transformer_resblocks_2_mlp_c_proj");
    assert_eq!(
        r.target,
        Target::Layer {
            module: "text_encoder.encoder.layers.2.mlp.fc2".into()
        }
    );
    // the attention as a whole: A1111 counts an error and changes nothing
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_0_self_attn")
        .unwrap()
        .unwrap();
    assert_eq!(r.sd_key, "model_transformer_resblocks_0_attn");
    assert_eq!(r.target, Target::Inert(Inert::WholeAttention));
    // the last resblock, which SD2 skips (Sumi keeps 3 of the tiny model's 4)
    let r = ix
        .resolve("lora_te_text_model_encoder_layers_3_mlp_fc1")
        .unwrap()
        .unwrap();
    assert_eq!(r.target, Target::Inert(Inert::UnusedLayer));
    assert_eq!(
        ix.resolve("lora_te_text_model_encoder_layers_4_mlp_fc1")
            .unwrap(),
        None
    );
    // SD2's final norm: matched, and A1111's `'transformer' in sd_key[:20]` says U-Net multiplier
    let r = ix.resolve("model_ln_final").unwrap().unwrap();
    assert_eq!(
        r.target,
        Target::Layer {
            module: "text_encoder.final_layer_norm".into()
        }
    );
    assert!(!r.text_encoder());
}

/// A1111's SDXL table (`f'{i}_{name}'` per conditioner embedder, the SGM U-Net numbering) from
/// the tiny SDXL base's canonical names, and the refiner's (bigG is embedder 0).
#[test]
fn the_a1111_module_table_of_tiny_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    let xl = Weights::open(&sumi_testkit::tiny_model("sdxl", dir.path())).unwrap();
    let ix = TargetIndex::new(xl.names(), Family::Sdxl);
    let layer = |key: &str| {
        let r = ix.resolve(key).unwrap().unwrap();
        match r.target {
            Target::Layer { module } => (r.sd_key, module),
            other => panic!("{key}: {other:?}"),
        }
    };
    let (sd_key, module) = layer("lora_te1_text_model_encoder_layers_0_self_attn_q_proj");
    assert_eq!(
        sd_key,
        "0_transformer_text_model_encoder_layers_0_self_attn_q_proj"
    );
    assert_eq!(module, "text_encoder.encoder.layers.0.self_attn.q_proj");
    let (sd_key, module) = layer("lora_te2_text_model_encoder_layers_0_mlp_fc1");
    assert_eq!(sd_key, "1_model_transformer_resblocks_0_mlp_c_fc");
    assert_eq!(module, "text_encoder_2.encoder.layers.0.mlp.fc1");
    for (key, module) in [
        (
            "lora_unet_input_blocks_4_1_proj_in",
            "unet.down_blocks.1.attentions.0.proj_in",
        ),
        (
            "lora_unet_down_blocks_2_attentions_1_transformer_blocks_1_attn1_to_out_0",
            "unet.down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_out.0",
        ),
        // SDXL's first up level has transformers: its upsampler is output_blocks.2.2
        (
            "lora_unet_output_blocks_2_2_conv",
            "unet.up_blocks.0.upsamplers.0.conv",
        ),
        ("lora_unet_label_emb_0_0", "unet.add_embedding.linear_1"),
    ] {
        assert_eq!(layer(key).1, module, "{key}");
    }
    // bigG's attention: the parts of one nn.MultiheadAttention, text-encoder multiplier
    for (part, p) in [
        ("k_proj", AttentionPart::K),
        ("out_proj", AttentionPart::Out),
    ] {
        let r = ix
            .resolve(&format!(
                "lora_te2_text_model_encoder_layers_1_self_attn_{part}"
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.sd_key,
            format!("1_model_transformer_resblocks_1_attn_{part}")
        );
        assert_eq!(
            r.target,
            Target::Attention {
                module: format!("text_encoder_2.encoder.layers.1.self_attn.{part}"),
                attention: "1_model_transformer_resblocks_1_attn".into(),
                part: p,
            }
        );
        assert!(r.text_encoder());
    }
    // A1111's conversion sends diffusers' up_blocks_0 upsampler to SD1's output_blocks_2_1_conv,
    // and SD1's text-encoder names match nothing on SDXL
    for key in [
        "lora_unet_up_blocks_0_upsamplers_0_conv",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    ] {
        assert_eq!(ix.resolve(key).unwrap(), None, "{key}");
    }
    let r = ix.resolve("lora_unet_input_blocks_4_1").unwrap().unwrap();
    assert_eq!(r.target, Target::Inert(Inert::Container));

    let refiner = Weights::open(&sumi_testkit::tiny_model("sdxl-refiner", dir.path())).unwrap();
    let ix = TargetIndex::new(refiner.names(), Family::SdxlRefiner);
    // the refiner's bigG is embedder 0: A1111's `lora_te2_` names (embedder 1) miss it
    assert_eq!(
        ix.resolve("lora_te2_text_model_encoder_layers_0_mlp_fc1")
            .unwrap(),
        None
    );
    let r = ix
        .resolve("0_model_transformer_resblocks_0_mlp_c_fc")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.target,
        Target::Layer {
            module: "text_encoder_2.encoder.layers.0.mlp.fc1".into()
        }
    );
}
