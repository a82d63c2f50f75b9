//! Whole-number options read as any integer and checked against the option's limits (the
//! pipeline's), so that `--steps -5` is refused as `steps: -5 is outside 1..=500` naming `--steps`, not
//! as an unknown argument or a bad digit. The subcommands also take negative numbers as values
//! (`allow_negative_numbers`), so a negative float reaches the pipeline's own check.

/// A clap value parser for a whole number in `lo..=hi`, as `T`; errors start with `field` as
/// the pipeline's own checks name it (`steps: -5 is outside 1..=500`).
pub fn between<T: TryFrom<i64>>(
    field: &'static str,
    lo: i64,
    hi: i64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{field}: {s:?} is not a whole number"))?;
        let outside = || format!("{field}: {v} is outside {lo}..={hi}");
        if !(lo..=hi).contains(&v) {
            return Err(outside());
        }
        T::try_from(v).map_err(|_| outside())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_negative_values_are_named_with_the_limits() {
        let steps = between::<u32>("steps", 1, 500);
        assert_eq!(steps("20"), Ok(20));
        assert_eq!(steps(" 500"), Ok(500));
        for (given, said) in [
            ("-5", "steps: -5 is outside 1..=500"),
            ("0", "steps: 0 is outside 1..=500"),
            ("501", "steps: 501 is outside 1..=500"),
            ("2.5", "steps: \"2.5\" is not a whole number"),
            (
                "99999999999999999999",
                "steps: \"99999999999999999999\" is not a whole number",
            ),
        ] {
            assert_eq!(steps(given), Err(said.to_string()));
        }
        assert_eq!(between::<usize>("x", 0, 4096)("0"), Ok(0));
    }
}
