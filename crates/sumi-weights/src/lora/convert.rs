//! A1111's `convert_diffusers_name_to_compvis` (`extensions-builtin/Lora/networks.py`): the
//! kohya/diffusers module names of a LoRA file (`lora_unet_down_blocks_0_attentions_0_proj_in`)
//! rewritten into the compvis module names A1111 gives the model's layers
//! (`diffusion_model_input_blocks_1_1_proj_in`).
//!
//! A1111 matches each name against ten regular expressions with `re.match` (anchored at the
//! start only) and turns every captured group that starts with a digit into `int(group)`. The
//! patterns are simple enough to be matched here by hand, greedy as Python's `re` is: `(\d+)`
//! is a run of ASCII digits (Python's `\d` also takes other Unicode decimal digits, which no
//! LoRA writer emits), `(.+)`/`(.*)` take everything up to the first newline.

/// A captured group as A1111's `match()` helper keeps it: `int(group)` when the group starts
/// with a digit, else the text.
#[derive(Debug, Clone, PartialEq)]
enum Group {
    Int(i128),
    Str(String),
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::Int(n) => write!(f, "{n}"),
            Group::Str(s) => f.write_str(s),
        }
    }
}

/// One piece of a pattern.
enum Piece {
    /// Literal text.
    Lit(&'static str),
    /// `(\d+)`.
    Num,
    /// `(a|b)`.
    Alt(&'static [&'static str]),
    /// `(.*)` (`min` 0) or `(.+)` (`min` 1), always last.
    Any(usize),
}

use Piece::{Alt, Any, Lit, Num};

/// Why a name cannot be converted: A1111 raises (and so fails to load the network).
pub(crate) type ConvertError = String;

/// `re.match(pattern, key)`: the captured groups, or `None`.
fn re_match<'k>(key: &'k str, pattern: &[Piece]) -> Option<Vec<&'k str>> {
    let mut rest = key;
    let mut groups = Vec::new();
    for p in pattern {
        match p {
            Lit(s) => rest = rest.strip_prefix(s)?,
            Num => {
                let n = rest.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None;
                }
                groups.push(&rest[..n]);
                rest = &rest[n..];
            }
            Alt(options) => {
                let o = options.iter().find(|o| rest.starts_with(*o))?;
                groups.push(&rest[..o.len()]);
                rest = &rest[o.len()..];
            }
            Any(min) => {
                let n = rest.find('\n').unwrap_or(rest.len());
                if n < *min {
                    return None;
                }
                groups.push(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
    Some(groups)
}

/// Python's `int(s)` for a string that starts with a digit: digits with single underscores
/// between them, trailing whitespace allowed; anything else raises `ValueError`. `Ok(None)`
/// for a number beyond `i128`, which no module index can equal.
fn py_int(s: &str) -> Result<Option<i128>, ConvertError> {
    let t = s.trim_end();
    let well_formed = !t.starts_with('_')
        && !t.ends_with('_')
        && !t.contains("__")
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(format!(
            "invalid literal for int() with base 10: {s:?} (A1111 fails on this key)"
        ));
    }
    Ok(t.replace('_', "").parse::<i128>().ok())
}

/// The groups of a match, converted as A1111's `match()` does; `Ok(None)` if a number is too
/// large to be any module's index.
fn groups(raw: Vec<&str>) -> Result<Option<Vec<Group>>, ConvertError> {
    let mut out = Vec::with_capacity(raw.len());
    for g in raw {
        if g.starts_with(|c: char| c.is_ascii_digit()) {
            match py_int(g)? {
                Some(n) => out.push(Group::Int(n)),
                None => return Ok(None),
            }
        } else {
            out.push(Group::Str(g.to_string()));
        }
    }
    Ok(Some(out))
}

/// A1111's `suffix_conversion`: the resnet layer names of diffusers → LDM (whole suffix).
fn suffix(block: &Group, s: &Group) -> String {
    const RESNETS: &[(&str, &str)] = &[
        ("conv1", "in_layers_2"),
        ("conv2", "out_layers_3"),
        ("norm1", "in_layers_0"),
        ("norm2", "out_layers_0"),
        ("time_emb_proj", "emb_layers_1"),
        ("conv_shortcut", "skip_connection"),
    ];
    match (block, s) {
        (Group::Str(b), Group::Str(s)) if b == "resnets" => RESNETS
            .iter()
            .find(|(d, _)| d == s)
            .map_or_else(|| s.clone(), |(_, c)| (*c).to_string()),
        _ => s.to_string(),
    }
}

fn int(g: &Group) -> Result<i128, ConvertError> {
    match g {
        Group::Int(n) => Ok(*n),
        // unreachable for `(\d+)` groups, which always start with a digit
        Group::Str(s) => Err(format!("`{s}` is not a number")),
    }
}

/// The text encoder's layer suffix in open_clip names (A1111: `mlp_fc1` → `mlp_c_fc`,
/// `mlp_fc2` → `mlp_c_proj`, else `self_attn` → `attn`, each `str.replace`).
fn open_clip_suffix(s: &Group) -> Result<String, ConvertError> {
    let Group::Str(s) = s else {
        return Err(format!(
            "`{s}` is a number where A1111 expects text (A1111 fails on this key)"
        ));
    };
    Ok(if s.contains("mlp_fc1") {
        s.replace("mlp_fc1", "mlp_c_fc")
    } else if s.contains("mlp_fc2") {
        s.replace("mlp_fc2", "mlp_c_proj")
    } else {
        s.replace("self_attn", "attn")
    })
}

/// Builds the compvis name from a rule's groups (and `is_sd2`).
type Build = fn(&[Group], bool) -> Result<String, ConvertError>;

const BLOCK: &[&str] = &["attentions", "resnets"];

fn is_attentions(g: &Group) -> bool {
    *g == Group::Str("attentions".into())
}

/// A1111's ten patterns, in its order, each with the name it builds.
const RULES: &[(&[Piece], Build)] = &[
    (&[Lit("lora_unet_conv_in"), Any(0)], |g, _| {
        Ok(format!("diffusion_model_input_blocks_0_0{}", g[0]))
    }),
    (&[Lit("lora_unet_conv_out"), Any(0)], |g, _| {
        Ok(format!("diffusion_model_out_2{}", g[0]))
    }),
    (
        &[Lit("lora_unet_time_embedding_linear_"), Num, Any(0)],
        |g, _| {
            Ok(format!(
                "diffusion_model_time_embed_{}{}",
                int(&g[0])? * 2 - 2,
                g[1]
            ))
        },
    ),
    (
        &[
            Lit("lora_unet_down_blocks_"),
            Num,
            Lit("_"),
            Alt(BLOCK),
            Lit("_"),
            Num,
            Lit("_"),
            Any(1),
        ],
        |g, _| {
            Ok(format!(
                "diffusion_model_input_blocks_{}_{}_{}",
                1 + int(&g[0])? * 3 + int(&g[2])?,
                u8::from(is_attentions(&g[1])),
                suffix(&g[1], &g[3])
            ))
        },
    ),
    (
        &[
            Lit("lora_unet_mid_block_"),
            Alt(BLOCK),
            Lit("_"),
            Num,
            Lit("_"),
            Any(1),
        ],
        |g, _| {
            let index = if is_attentions(&g[0]) {
                1
            } else {
                int(&g[1])? * 2
            };
            Ok(format!(
                "diffusion_model_middle_block_{index}_{}",
                suffix(&g[0], &g[2])
            ))
        },
    ),
    (
        &[
            Lit("lora_unet_up_blocks_"),
            Num,
            Lit("_"),
            Alt(BLOCK),
            Lit("_"),
            Num,
            Lit("_"),
            Any(1),
        ],
        |g, _| {
            Ok(format!(
                "diffusion_model_output_blocks_{}_{}_{}",
                int(&g[0])? * 3 + int(&g[2])?,
                u8::from(is_attentions(&g[1])),
                suffix(&g[1], &g[3])
            ))
        },
    ),
    (
        &[
            Lit("lora_unet_down_blocks_"),
            Num,
            Lit("_downsamplers_0_conv"),
        ],
        |g, _| {
            Ok(format!(
                "diffusion_model_input_blocks_{}_0_op",
                3 + int(&g[0])? * 3
            ))
        },
    ),
    (
        &[Lit("lora_unet_up_blocks_"), Num, Lit("_upsamplers_0_conv")],
        |g, _| {
            let i = int(&g[0])?;
            Ok(format!(
                "diffusion_model_output_blocks_{}_{}_conv",
                2 + i * 3,
                if i > 0 { 2 } else { 1 }
            ))
        },
    ),
    (
        &[
            Lit("lora_te_text_model_encoder_layers_"),
            Num,
            Lit("_"),
            Any(1),
        ],
        |g, is_sd2| {
            if is_sd2 {
                Ok(format!(
                    "model_transformer_resblocks_{}_{}",
                    g[0],
                    open_clip_suffix(&g[1])?
                ))
            } else {
                Ok(format!(
                    "transformer_text_model_encoder_layers_{}_{}",
                    g[0], g[1]
                ))
            }
        },
    ),
    (
        &[
            Lit("lora_te2_text_model_encoder_layers_"),
            Num,
            Lit("_"),
            Any(1),
        ],
        |g, _| {
            Ok(format!(
                "1_model_transformer_resblocks_{}_{}",
                g[0],
                open_clip_suffix(&g[1])?
            ))
        },
    ),
];

/// A1111's `convert_diffusers_name_to_compvis(key, is_sd2)`: the first of [`RULES`] that
/// matches builds the name; a name no pattern matches comes back unchanged (and so does one
/// whose numbers are too large for any module). `Err` where A1111 raises (`int()` of a group
/// such as `1x`, text operations on a numeric group).
pub(crate) fn convert_diffusers_name_to_compvis(
    key: &str,
    is_sd2: bool,
) -> Result<String, ConvertError> {
    for (pattern, build) in RULES {
        if let Some(raw) = re_match(key, pattern) {
            return match groups(raw)? {
                Some(g) => build(&g, is_sd2),
                None => Ok(key.to_string()),
            };
        }
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::convert_diffusers_name_to_compvis as convert;

    fn c(key: &str, sd2: bool) -> String {
        convert(key, sd2).unwrap()
    }

    #[test]
    fn unet_names_as_a1111() {
        assert_eq!(
            c("lora_unet_down_blocks_1_attentions_0_proj_in", false),
            "diffusion_model_input_blocks_4_1_proj_in"
        );
        assert_eq!(
            c("lora_unet_down_blocks_2_resnets_1_conv_shortcut", false),
            "diffusion_model_input_blocks_8_0_skip_connection"
        );
        assert_eq!(
            c("lora_unet_mid_block_resnets_1_time_emb_proj", false),
            "diffusion_model_middle_block_2_emb_layers_1"
        );
        assert_eq!(
            c("lora_unet_mid_block_attentions_0_proj_out", false),
            "diffusion_model_middle_block_1_proj_out"
        );
        assert_eq!(
            c(
                "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k",
                false
            ),
            "diffusion_model_output_blocks_11_1_transformer_blocks_0_attn2_to_k"
        );
        assert_eq!(
            c("lora_unet_up_blocks_0_upsamplers_0_conv", false),
            "diffusion_model_output_blocks_2_1_conv"
        );
        assert_eq!(
            c("lora_unet_up_blocks_2_upsamplers_0_conv", false),
            "diffusion_model_output_blocks_8_2_conv"
        );
        assert_eq!(
            c("lora_unet_down_blocks_2_downsamplers_0_conv", false),
            "diffusion_model_input_blocks_9_0_op"
        );
        assert_eq!(
            c("lora_unet_time_embedding_linear_2", false),
            "diffusion_model_time_embed_2"
        );
        // A1111's arithmetic, negative index included
        assert_eq!(
            c("lora_unet_time_embedding_linear_0", false),
            "diffusion_model_time_embed_-2"
        );
        assert_eq!(
            c("lora_unet_conv_in", false),
            "diffusion_model_input_blocks_0_0"
        );
        assert_eq!(c("lora_unet_conv_out", false), "diffusion_model_out_2");
        // compvis-style names pass unchanged
        assert_eq!(
            c("lora_unet_input_blocks_1_1_proj_in", false),
            "lora_unet_input_blocks_1_1_proj_in"
        );
    }

    #[test]
    fn text_encoder_names_as_a1111() {
        assert_eq!(
            c(
                "lora_te_text_model_encoder_layers_3_self_attn_q_proj",
                false
            ),
            "transformer_text_model_encoder_layers_3_self_attn_q_proj"
        );
        assert_eq!(
            c("lora_te_text_model_encoder_layers_3_self_attn_q_proj", true),
            "model_transformer_resblocks_3_attn_q_proj"
        );
        assert_eq!(
            c("lora_te_text_model_encoder_layers_0_mlp_fc1", true),
            "model_transformer_resblocks_0_mlp_c_fc"
        );
        assert_eq!(
            c("lora_te_text_model_encoder_layers_0_mlp_fc2", true),
            "model_transformer_resblocks_0_mlp_c_proj"
        );
        assert_eq!(
            c(
                "lora_te2_text_model_encoder_layers_5_self_attn_out_proj",
                false
            ),
            "1_model_transformer_resblocks_5_attn_out_proj"
        );
        assert_eq!(
            c("lora_te1_text_model_encoder_layers_0_mlp_fc1", false),
            "lora_te1_text_model_encoder_layers_0_mlp_fc1"
        );
    }

    #[test]
    fn python_int_rules() {
        // `int("1_0")` is 10 in Python; `int("1x")` raises, and so does A1111
        assert_eq!(
            c("lora_unet_up_blocks_0_resnets_1_1_0", false),
            "diffusion_model_output_blocks_1_0_10"
        );
        assert!(convert("lora_unet_up_blocks_0_resnets_1_1x", false).is_err());
        assert!(convert("lora_te_text_model_encoder_layers_0_7", true).is_err());
        assert_eq!(
            c("lora_te_text_model_encoder_layers_0_7", false),
            "transformer_text_model_encoder_layers_0_7"
        );
        // `(.+)` stops at a newline; `re.match` needs no end
        assert_eq!(
            c("lora_unet_down_blocks_0_attentions_0_proj_in\nx", false),
            "diffusion_model_input_blocks_1_1_proj_in"
        );
        assert_eq!(
            c("lora_unet_down_blocks_0_attentions_0_\nx", false),
            "lora_unet_down_blocks_0_attentions_0_\nx"
        );
    }
}
