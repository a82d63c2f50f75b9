//! Whole-number options read as any integer and checked against the option's limits (the
//! pipeline's), so that `--steps -5` is refused as `-5 is outside 1..=500` naming `--steps`, not
//! as an unknown argument or a bad digit. The subcommands also take negative numbers as values
//! (`allow_negative_numbers`), so a negative float reaches the pipeline's own check.

/// A clap value parser for a whole number in `lo..=hi`, as `T`.
pub fn between<T: TryFrom<i64>>(
    lo: i64,
    hi: i64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a whole number"))?;
        if !(lo..=hi).contains(&v) {
            return Err(format!("{v} is outside {lo}..={hi}"));
        }
        T::try_from(v).map_err(|_| format!("{v} is outside {lo}..={hi}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_negative_values_are_named_with_the_limits() {
        let steps = between::<u32>(1, 500);
        assert_eq!(steps("20"), Ok(20));
        assert_eq!(steps(" 500"), Ok(500));
        assert_eq!(steps("-5"), Err("-5 is outside 1..=500".to_string()));
        assert_eq!(steps("0"), Err("0 is outside 1..=500".to_string()));
        assert_eq!(steps("501"), Err("501 is outside 1..=500".to_string()));
        assert_eq!(
            steps("2.5"),
            Err("\"2.5\" is not a whole number".to_string())
        );
        assert_eq!(
            steps("99999999999999999999"),
            Err("\"99999999999999999999\" is not a whole number".to_string())
        );
        assert_eq!(between::<usize>(0, 4096)("0"), Ok(0));
    }
}
