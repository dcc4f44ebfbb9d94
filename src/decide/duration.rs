//! Go-style durations (`15m`, `10s`, `336h`, `1h30m`), the format Kubernetes users already write.

use std::time::Duration;

/// Parses a Go duration string. Negative and empty durations are refused.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{input:?}: missing unit (use ns, us, ms, s, m or h)"))?;
        if num_len == 0 {
            return Err(format!("{input:?}: expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| format!("{input:?}: bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{input:?}: unknown unit {other:?}")),
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    // 100 years is far beyond any sensible interval; refusing it keeps arithmetic safe.
    if !total.is_finite() || total > 100.0 * 365.0 * 86_400.0 {
        return Err(format!("{input:?}: too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way `parse` reads it, coarsely (for messages).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s if s > 3600 => format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60),
        s if s > 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_default_warning_window_is_written_as_this_module_writes_it() {
        assert_eq!(
            format(crate::crd::DEFAULT_WARN_BEFORE),
            crate::crd::DEFAULT_WARN_BEFORE_TEXT
        );
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("336h"), Ok(Duration::from_secs(336 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "15", "m", "-5m", "5x", "1e9h", "5 m", "999999999999h"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [30, 60, 90, 120, 900, 3600, 5400, 7322] {
            let d = Duration::from_secs(d);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
