//! LCM-LoRA's layout (`latent-consistency/lcm-lora-sdv1-5`: kohya-style `lora_unet_<diffusers
//! module>` keys with `lora_down.weight`, `lora_up.weight` and `alpha`, over every attention
//! linear, `proj_in`/`proj_out`, feed-forward, resnet `conv1`/`conv2`/`conv_shortcut`/
//! `time_emb_proj` and the down/upsampler convs of the U-Net) read against the tiny SD1 model,
//! which has SD1.5's block structure: `fixtures/lcm_lora/lcm_lora_tiny_sd1.safetensors`, written
//! by `tools/reference/make_lcm_lora.py fixtures/tiny/sd1/manifest.json … --rank 1` (the same
//! script writes the full-size file for `tools/bench/run.sh`'s fast-img2img-512 line). Every
//! module lands on the diffusers module its name spells, none is left unmatched, and each
//! `lora_down`/`lora_up` fits its layer's weight.

use std::collections::BTreeMap;

use sumi_weights::lora::{read_network, TargetIndex};
use sumi_weights::{Family, Weights};

#[test]
fn lcm_lora_keys_land_on_the_layers_they_name() {
    let path = sumi_testkit::fixtures().join("lcm_lora/lcm_lora_tiny_sd1.safetensors");
    let bytes = sumi_testkit::fixture::read_bytes(&path).unwrap();
    assert!(bytes.len() > 1000, "{}: empty fixture", path.display());
    let dir = tempfile::tempdir().unwrap();
    let w = Weights::open(&sumi_testkit::tiny_model("sd1", dir.path())).unwrap();
    let ix = TargetIndex::new(w.names(), Family::Sd1);
    let n = read_network(&path, &ix).unwrap();
    assert!(n.unmatched.is_empty(), "unmatched: {:?}", n.unmatched);
    assert!(n.inert.is_empty());
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &n.targets {
        let stem = t.network_key.split('.').next().unwrap();
        let module = t.module.strip_prefix("unet.").unwrap();
        assert_eq!(stem, format!("lora_unet_{}", module.replace('.', "_")));
        assert!(!t.text_encoder, "{}", t.module);
        let keys: Vec<&str> = t.tensors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["alpha", "lora_down.weight", "lora_up.weight"]);
        let weight = w.shape(&format!("{}.weight", t.module)).unwrap();
        let down = t.tensors["lora_down.weight"].dims();
        let up = t.tensors["lora_up.weight"].dims();
        assert_eq!((up[0], down[1]), (weight[0], weight[1]), "{}", t.module);
        assert_eq!(&down[2..], &weight[2..], "{}: kernel", t.module);
        let kind = [
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "proj_in",
            "proj_out",
            "ff.net.0.proj",
            "ff.net.2",
            "conv1",
            "conv2",
            "conv_shortcut",
            "time_emb_proj",
            "samplers.0.conv",
        ]
        .into_iter()
        .find(|k| t.module.ends_with(k))
        .unwrap_or_else(|| panic!("{}: not an LCM-LoRA target", t.module));
        *kinds.entry(kind).or_default() += 1;
    }
    // SD1.5's 16 transformers (2 attentions × q, k, v, out), 22 resnets, 3 down- and 3
    // upsamplers; conv_shortcut where a resnet changes its width (SD1.5: 14; the tiny model,
    // 64 channels at every level: the 12 up-block resnets, which take the skip concatenation)
    let want: BTreeMap<&str, usize> = [
        ("to_q", 32),
        ("to_k", 32),
        ("to_v", 32),
        ("to_out.0", 32),
        ("proj_in", 16),
        ("proj_out", 16),
        ("ff.net.0.proj", 16),
        ("ff.net.2", 16),
        ("conv1", 22),
        ("conv2", 22),
        ("conv_shortcut", 12),
        ("time_emb_proj", 22),
        ("samplers.0.conv", 6),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, want);
}
