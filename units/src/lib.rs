//! Sizes, rates and durations as people write them in scenario files and flags.
//!
//! Pure functions, no I/O. Parsing is exact: numbers are read as decimal fractions into
//! integers (never through `f64`), so `"1.5GiB"` is exactly 1 610 612 736 bytes on every
//! platform. Overflow and malformed text are errors that quote the bad value; nothing panics.
//!
//! | quantity | units (case-sensitive) |
//! |---|---|
//! | size | bare number (bytes), `B`; binary `KiB` `MiB` `GiB` `TiB` `PiB`; decimal `KB`/`kB` `MB` `GB` `TB` `PB` |
//! | rate | decimal bits `bit/s` `kbit/s`/`Kbit/s` `Mbit/s` `Gbit/s` `Tbit/s`; bytes `B/s` `KB/s`/`kB/s` `MB/s` `GB/s` `TB/s` `KiB/s` `MiB/s` `GiB/s` `TiB/s` |
//! | duration | `ns` `us`/`µs` `ms` `s` `m`/`min` `h` `d` |
//!
//! A single optional space may separate the number from its unit. The `format_*` functions
//! produce the shortest exact spelling, so `parse(format(x)) == x` for every value.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

/// Which kind of quantity was being parsed; used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A number of bytes.
    Size,
    /// Bytes per second.
    Rate,
    /// A span of time.
    Duration,
}

impl Quantity {
    /// A valid example of this quantity, shown in error messages.
    pub fn example(self) -> &'static str {
        match self {
            Quantity::Size => "64KiB",
            Quantity::Rate => "100Mbit/s",
            Quantity::Duration => "20ms",
        }
    }

    /// The smallest unit this quantity is counted in.
    pub fn base_unit(self) -> &'static str {
        match self {
            Quantity::Size => "bytes",
            Quantity::Rate => "bytes per second",
            Quantity::Duration => "nanoseconds",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Size => "size",
            Quantity::Rate => "rate",
            Quantity::Duration => "duration",
        })
    }
}

/// Why a size, rate or duration could not be parsed. Every message quotes the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a known unit.
    #[error("cannot parse {value:?} as a {quantity} (e.g. {example:?})", example = .quantity.example())]
    Invalid {
        /// What was being parsed.
        quantity: Quantity,
        /// The text as given.
        value: String,
    },
    /// The value does not fit (sizes and rates: `u64`; durations: `u64` seconds).
    #[error("{value:?} is too large for a {quantity}")]
    Overflow {
        /// What was being parsed.
        quantity: Quantity,
        /// The text as given.
        value: String,
    },
    /// A fraction that does not come to a whole number of the base unit (e.g. `"1.5B"`).
    #[error("{value:?} is not a whole number of {base}", base = .quantity.base_unit())]
    NotWhole {
        /// What was being parsed.
        quantity: Quantity,
        /// The text as given.
        value: String,
    },
}

/// A unit: its spelling, its size in the base unit, and whether `format_*` may choose it.
struct Unit {
    name: &'static str,
    scale: u128,
    canonical: bool,
}

const fn unit(name: &'static str, scale: u128) -> Unit {
    Unit {
        name,
        scale,
        canonical: true,
    }
}

const fn alias(name: &'static str, scale: u128) -> Unit {
    Unit {
        name,
        scale,
        canonical: false,
    }
}

const KI: u128 = 1 << 10;
const K: u128 = 1_000;

/// Size units, in bytes.
const SIZE_UNITS: &[Unit] = &[
    unit("B", 1),
    unit("KiB", KI),
    unit("MiB", KI.pow(2)),
    unit("GiB", KI.pow(3)),
    unit("TiB", KI.pow(4)),
    unit("PiB", KI.pow(5)),
    unit("KB", K),
    alias("kB", K),
    unit("MB", K.pow(2)),
    unit("GB", K.pow(3)),
    unit("TB", K.pow(4)),
    unit("PB", K.pow(5)),
];

/// Rate units, in bits per second (so that both bit and byte units are integers).
const RATE_UNITS: &[Unit] = &[
    unit("bit/s", 1),
    unit("kbit/s", K),
    alias("Kbit/s", K),
    unit("Mbit/s", K.pow(2)),
    unit("Gbit/s", K.pow(3)),
    unit("Tbit/s", K.pow(4)),
    unit("B/s", 8),
    unit("KB/s", 8 * K),
    alias("kB/s", 8 * K),
    unit("MB/s", 8 * K.pow(2)),
    unit("GB/s", 8 * K.pow(3)),
    unit("TB/s", 8 * K.pow(4)),
    unit("KiB/s", 8 * KI),
    unit("MiB/s", 8 * KI.pow(2)),
    unit("GiB/s", 8 * KI.pow(3)),
    unit("TiB/s", 8 * KI.pow(4)),
];

const NS_PER_S: u128 = 1_000_000_000;

/// Duration units, in nanoseconds.
const DURATION_UNITS: &[Unit] = &[
    unit("ns", 1),
    unit("us", 1_000),
    alias("µs", 1_000),
    unit("ms", 1_000_000),
    unit("s", NS_PER_S),
    unit("m", 60 * NS_PER_S),
    alias("min", 60 * NS_PER_S),
    unit("h", 3_600 * NS_PER_S),
    alias("d", 86_400 * NS_PER_S),
];

/// A decimal number `mantissa / 10^scale`, with trailing fractional zeros removed.
struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// Splits `"12.5 MB/s"` into the number and the unit text. `None` if there is no number.
fn split(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(end);
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    if number.is_empty() {
        return None;
    }
    Some((number, unit))
}

/// Parses `digits[.digits]` exactly. `Err(true)` on overflow, `Err(false)` on bad syntax.
fn parse_decimal(number: &str) -> Result<Decimal, bool> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f.trim_end_matches('0')),
        None => (number, ""),
    };
    let frac_ok = match number.split_once('.') {
        Some((_, f)) => !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac_ok {
        return Err(false);
    }
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or(true)?;
    }
    let scale = u32::try_from(frac.len()).map_err(|_| true)?;
    Ok(Decimal { mantissa, scale })
}

/// How to turn the exact value (in base units) into the result.
#[derive(Clone, Copy)]
enum Rounding {
    /// The value must be a whole number of base units.
    Exact,
    /// Round down to a whole number of `divisor` base units.
    FloorDiv(u128),
}

/// Parses `text` against `units`, returning the value in the unit table's base unit
/// (divided by the rounding divisor). `bare` is the scale of a number without a unit.
fn parse_with(
    text: &str,
    quantity: Quantity,
    units: &[Unit],
    bare: Option<u128>,
    rounding: Rounding,
) -> Result<u128, UnitError> {
    let invalid = || UnitError::Invalid {
        quantity,
        value: text.to_owned(),
    };
    let overflow = || UnitError::Overflow {
        quantity,
        value: text.to_owned(),
    };
    let (number, unit_text) = split(text).ok_or_else(invalid)?;
    let scale = if unit_text.is_empty() {
        bare.ok_or_else(invalid)?
    } else {
        units
            .iter()
            .find(|u| u.name == unit_text)
            .map(|u| u.scale)
            .ok_or_else(invalid)?
    };
    let decimal = parse_decimal(number).map_err(|ov| if ov { overflow() } else { invalid() })?;
    let numerator = decimal.mantissa.checked_mul(scale).ok_or_else(overflow)?;
    let Some(denominator) = 10u128.checked_pow(decimal.scale) else {
        // More than 38 significant fractional digits: the value is `mantissa` (< 10^39) over a
        // denominator above 10^38, i.e. below 10 * `scale`; it can only be whole if
        // the mantissa were a multiple of 10, which trimming ruled out.
        return match rounding {
            Rounding::Exact => Err(UnitError::NotWhole {
                quantity,
                value: text.to_owned(),
            }),
            Rounding::FloorDiv(_) => Err(invalid()),
        };
    };
    match rounding {
        Rounding::Exact => {
            if numerator % denominator != 0 {
                return Err(UnitError::NotWhole {
                    quantity,
                    value: text.to_owned(),
                });
            }
            Ok(numerator / denominator)
        }
        Rounding::FloorDiv(divisor) => {
            let denominator = denominator.checked_mul(divisor).ok_or_else(invalid)?;
            Ok(numerator / denominator)
        }
    }
}

/// Parses a size in bytes: `65536`, `64KiB`, `2MiB`, `1GiB`, `1TiB` (binary), `KB`/`MB`/`GB`/`TB`
/// (decimal), optionally with one space before the unit. A fraction is allowed when it comes to
/// whole bytes.
///
/// ```
/// use tierswarm_units::parse_size;
/// assert_eq!(parse_size("64KiB"), Ok(65_536));
/// assert_eq!(parse_size("1.5 GiB"), Ok(1_610_612_736));
/// assert_eq!(parse_size("2MB"), Ok(2_000_000));
/// assert_eq!(parse_size("65536"), Ok(65_536));
/// assert!(parse_size("1.5B").is_err());
/// assert!(parse_size("64 kibibytes").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let value = parse_with(text, Quantity::Size, SIZE_UNITS, Some(1), Rounding::Exact)?;
    u64::try_from(value).map_err(|_| UnitError::Overflow {
        quantity: Quantity::Size,
        value: text.to_owned(),
    })
}

/// Parses a rate into bytes per second: `100Mbit/s`, `12.5MB/s`, `1Gbit/s`, `500kbit/s`,
/// `64KiB/s`. Bit rates are decimal (`kbit` = 1000 bits). A rate that is not a whole number of
/// bytes per second is rounded down.
///
/// ```
/// use tierswarm_units::parse_rate;
/// assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
/// assert_eq!(parse_rate("12.5MB/s"), Ok(12_500_000));
/// assert_eq!(parse_rate("500kbit/s"), Ok(62_500));
/// assert_eq!(parse_rate("64KiB/s"), Ok(65_536));
/// assert!(parse_rate("40Mbps").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    let value = parse_with(
        text,
        Quantity::Rate,
        RATE_UNITS,
        None,
        Rounding::FloorDiv(8),
    )?;
    u64::try_from(value).map_err(|_| UnitError::Overflow {
        quantity: Quantity::Rate,
        value: text.to_owned(),
    })
}

/// Parses a duration: `250us`, `20ms`, `1.5s`, `2m`, `1h`, `0s` (also `ns`, `µs`, `min`, `d`).
/// A unit is required; a fraction must come to whole nanoseconds.
///
/// ```
/// use std::time::Duration;
/// use tierswarm_units::parse_duration;
/// assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
/// assert!(parse_duration("20").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let nanos = parse_with(
        text,
        Quantity::Duration,
        DURATION_UNITS,
        None,
        Rounding::Exact,
    )?;
    let secs = u64::try_from(nanos / NS_PER_S).map_err(|_| UnitError::Overflow {
        quantity: Quantity::Duration,
        value: text.to_owned(),
    })?;
    // The remainder is below 10^9 and so fits in u32.
    let sub = u32::try_from(nanos % NS_PER_S).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// The shortest exact spelling of `value` (in base units) among the canonical `units` that
/// need at most three decimals; ties go to integers, then to the larger unit.
fn format_with(value: u128, units: &[Unit], zero: &str) -> String {
    if value == 0 {
        return zero.to_owned();
    }
    // Preference key: fewer digits, then no fraction, then the larger unit.
    type Key = (usize, bool, std::cmp::Reverse<u128>);
    let mut best: Option<(Key, String)> = None;
    for u in units.iter().filter(|u| u.canonical && value >= u.scale) {
        let int = value / u.scale;
        let rem = value % u.scale;
        let number = if rem == 0 {
            int.to_string()
        } else if (rem * 1_000) % u.scale == 0 {
            let frac = format!("{:03}", rem * 1_000 / u.scale);
            format!("{int}.{}", frac.trim_end_matches('0'))
        } else {
            continue;
        };
        let key = (number.len(), rem != 0, std::cmp::Reverse(u.scale));
        let better = match &best {
            Some((k, _)) => key < *k,
            None => true,
        };
        if better {
            best = Some((key, format!("{number}{}", u.name)));
        }
    }
    // The unit of scale 1 always qualifies, so `best` is set; fall back defensively anyway.
    best.map(|b| b.1).unwrap_or_else(|| value.to_string())
}

/// Formats a size exactly and briefly: `1.5GiB`, `100MB`, `1025B`. `parse_size` reads it back
/// to the same value.
pub fn format_size(bytes: u64) -> String {
    format_with(u128::from(bytes), SIZE_UNITS, "0B")
}

/// Formats a rate in bytes per second exactly and briefly: `100Mbit/s`, `64KiB/s`.
/// `parse_rate` reads it back to the same value.
pub fn format_rate(bytes_per_second: u64) -> String {
    format_with(u128::from(bytes_per_second) * 8, RATE_UNITS, "0B/s")
}

/// Formats a duration exactly and briefly: `1.5s`, `250us`, `2h`, `0s`. `parse_duration`
/// reads it back to the same value.
pub fn format_duration(duration: Duration) -> String {
    format_with(duration.as_nanos(), DURATION_UNITS, "0s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1 TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("3kB"), Ok(3_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(
            parse_size("1.50000000000000000000000000000000000000000KiB"),
            Ok(1536)
        );
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(
            parse_size("16EiB").unwrap_err().to_string(),
            r#"cannot parse "16EiB" as a size (e.g. "64KiB")"#
        );
        assert_eq!(
            parse_size("16384PiB").unwrap_err().to_string(),
            r#""16384PiB" is too large for a size"#
        );
        assert_eq!(
            parse_size("1.3B").unwrap_err().to_string(),
            r#""1.3B" is not a whole number of bytes"#
        );
        for bad in [
            "", " ", "KiB", "1.KiB", ".5KiB", "1..5KiB", "-1KiB", "1  KiB", "1e3", "1 kib",
            "1,5MiB",
        ] {
            assert!(
                matches!(parse_size(bad), Err(UnitError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            parse_size("0.0000000000000000000000000000000000000000001KiB"),
            Err(UnitError::NotWhole { .. })
        ));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_rate("12.5MB/s"), Ok(12_500_000));
        assert_eq!(parse_rate("1Gbit/s"), Ok(125_000_000));
        assert_eq!(parse_rate("500kbit/s"), Ok(62_500));
        assert_eq!(parse_rate("64KiB/s"), Ok(65_536));
        assert_eq!(parse_rate("12 bit/s"), Ok(1)); // 1.5 bytes/s rounds down
        assert_eq!(
            parse_rate("40Mbps").unwrap_err().to_string(),
            r#"cannot parse "40Mbps" as a rate (e.g. "100Mbit/s")"#
        );
        assert!(parse_rate("100").is_err());
        assert!(matches!(
            parse_rate("1000000000TB/s"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("1.5ns").unwrap_err().to_string(),
            r#""1.5ns" is not a whole number of nanoseconds"#
        );
        assert!(parse_duration("5").is_err());
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(3 << 29), "1.5GiB");
        assert_eq!(format_size(1_000_000), "1MB");
        assert_eq!(format_size(1025), "1025B");
        assert_eq!(format_rate(12_500_000), "100Mbit/s");
        assert_eq!(format_rate(65_536), "64KiB/s");
        assert_eq!(format_rate(0), "0B/s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    const DENOMINATORS: [u128; 7] = [1, 2, 4, 8, 10, 100, 1000];

    /// A value in base units that is a whole or fractional number of one of `units`:
    /// `mantissa × scale / d` with `d` one of [`DENOMINATORS`] (the fractions `format_*` spells
    /// with at most three decimals; a smaller one when `d` does not leave whole base units),
    /// divided by `per` (8 for rates: their table counts bits). One draw in ten is any `u64` instead, which formats as a bare number mostly.
    fn suffixed(units: &'static [Unit], per: u128) -> impl Strategy<Value = u64> {
        let scaled = (
            0..units.len(),
            prop_oneof![2 => 1u128..100, 1 => 1u128..100_000],
            0..DENOMINATORS.len(),
        )
            .prop_map(move |(i, m, d)| {
                let whole = m * units[i].scale;
                // The first denominator from the drawn one down that leaves whole base units.
                let d = DENOMINATORS[..=d]
                    .iter()
                    .rev()
                    .find(|&&d| whole % (d * per) == 0)
                    .unwrap_or(&1);
                u64::try_from(whole / d / per).unwrap_or(u64::MAX)
            });
        prop_oneof![1 => any::<u64>(), 9 => scaled]
    }

    /// Text `int[.frac][ ]unit` over every spelling of `units` (aliases included).
    fn unit_text(units: &'static [Unit]) -> impl Strategy<Value = (String, u128, u32, usize)> {
        (
            0u128..100_000,
            prop_oneof![1 => Just(None), 2 => (0u32..4).prop_map(Some)],
            0..units.len(),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(move |(int, frac_digits, i, space, frac)| {
                let (number, mantissa, digits) = match frac_digits {
                    None => (int.to_string(), int, 0),
                    Some(k) => {
                        let f = u128::from(frac) % 10u128.pow(k + 1);
                        let text = format!("{int}.{f:0width$}", width = k as usize + 1);
                        (text, int * 10u128.pow(k + 1) + f, k + 1)
                    }
                };
                let sep = if space { " " } else { "" };
                (
                    format!("{number}{sep}{}", units[i].name),
                    mantissa,
                    digits,
                    i,
                )
            })
    }

    /// The share of `values` that `format` spells with a unit above the base one, and with a
    /// fraction.
    fn shares(values: &[u64], format: fn(u64) -> String, base: &str) -> (f64, f64) {
        let n = values.len() as f64;
        let texts: Vec<String> = values.iter().map(|&v| format(v)).collect();
        let suffixed = texts
            .iter()
            .filter(|t| t.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.') != base)
            .count();
        let fractional = texts.iter().filter(|t| t.contains('.')).count();
        (suffixed as f64 / n, fractional as f64 / n)
    }

    /// The round-trip generators draw suffixed and fractional spellings often (`cargo test -p
    /// tierswarm-units draws_ -- --nocapture` prints the shares).
    #[test]
    fn draws_suffixed_and_fractional_forms_often() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
        let mut runner = TestRunner::new_with_rng(
            ProptestConfig::default(),
            TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        );
        let mut sample = |s: &dyn Fn() -> BoxedStrategy<u64>| -> Vec<u64> {
            (0..2000)
                .map(|_| s().new_tree(&mut runner).unwrap().current())
                .collect()
        };
        let sizes = sample(&|| suffixed(SIZE_UNITS, 1).boxed());
        let rates = sample(&|| suffixed(RATE_UNITS, 8).boxed());
        for (what, values, format, base) in [
            ("sizes", &sizes, format_size as fn(u64) -> String, "B"),
            ("rates", &rates, format_rate, "B/s"),
        ] {
            let (suffixed, fractional) = shares(values, format, base);
            eprintln!(
                "{what}: {:.0}% formatted with a unit above the base, {:.0}% with a fraction",
                suffixed * 100.0,
                fractional * 100.0
            );
            // Rates spell many byte fractions as whole bit rates (1.5MB/s is 12Mbit/s), so fewer
            // of them keep a fraction.
            assert!(suffixed >= 0.6 && fractional >= 0.08, "{what}");
        }
    }

    proptest! {
        #[test]
        fn size_round_trips(x in suffixed(SIZE_UNITS, 1)) {
            prop_assert_eq!(parse_size(&format_size(x)), Ok(x));
        }

        #[test]
        fn rate_round_trips(x in suffixed(RATE_UNITS, 8)) {
            prop_assert_eq!(parse_rate(&format_rate(x)), Ok(x));
        }

        #[test]
        fn duration_round_trips(
            secs in prop_oneof![any::<u64>(), 0u64..100_000],
            nanos in prop_oneof![
                0u32..1_000_000_000,
                (0u32..1000).prop_map(|m| m * 1_000_000),
                (0u32..1000).prop_map(|u| u * 1000),
            ],
        ) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        /// Suffixed and fractional text, every spelling: parses to the exact value (computed
        /// here independently), and formatting that value reads back to it.
        #[test]
        fn suffixed_text_parses_exactly((text, mantissa, digits, i) in unit_text(SIZE_UNITS)) {
            let exact = mantissa * SIZE_UNITS[i].scale;
            let den = 10u128.pow(digits);
            match parse_size(&text) {
                Ok(v) => {
                    prop_assert_eq!(u128::from(v) * den, exact, "{}", text);
                    prop_assert_eq!(parse_size(&format_size(v)), Ok(v));
                }
                Err(UnitError::NotWhole { .. }) => prop_assert!(exact % den != 0, "{}", text),
                Err(UnitError::Overflow { .. }) => prop_assert!(exact / den > u128::from(u64::MAX)),
                Err(e) => prop_assert!(false, "{}: {}", text, e),
            }
        }

        #[test]
        fn rate_text_parses_exactly((text, mantissa, digits, i) in unit_text(RATE_UNITS)) {
            // Bits per second, rounded down to whole bytes.
            let bytes = mantissa * RATE_UNITS[i].scale / (10u128.pow(digits) * 8);
            match parse_rate(&text) {
                Ok(v) => {
                    prop_assert_eq!(u128::from(v), bytes, "{}", text);
                    prop_assert_eq!(parse_rate(&format_rate(v)), Ok(v));
                }
                Err(UnitError::Overflow { .. }) => prop_assert!(bytes > u128::from(u64::MAX)),
                Err(e) => prop_assert!(false, "{}: {}", text, e),
            }
        }

        #[test]
        fn duration_text_parses_exactly((text, mantissa, digits, i) in unit_text(DURATION_UNITS)) {
            let exact = mantissa * DURATION_UNITS[i].scale;
            let den = 10u128.pow(digits);
            match parse_duration(&text) {
                Ok(d) => {
                    prop_assert_eq!(d.as_nanos() * den, exact, "{}", text);
                    prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
                }
                Err(UnitError::NotWhole { .. }) => prop_assert!(exact % den != 0, "{}", text),
                Err(e) => prop_assert!(false, "{}: {}", text, e),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = (parse_size(&s), parse_rate(&s), parse_duration(&s));
        }

        #[test]
        fn unit_like_text_never_panics(s in "[0-9.]{0,45} ?[a-zA-Zµ/]{0,7}") {
            for r in [parse_size(&s).err(), parse_rate(&s).err(), parse_duration(&s).err()]
                .into_iter()
                .flatten()
            {
                let quoted = format!("{:?}", s);
                prop_assert!(r.to_string().contains(&quoted), "{} lacks {}", r, quoted);
            }
        }
    }
}
