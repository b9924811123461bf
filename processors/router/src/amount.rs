//! Serde helpers for amounts in configuration files: a decimal may be written as a string
//! (`"0.001"`, exact) or as a plain number (`0.001`, `100`), because TOML and JSON users write
//! numbers. Numbers go through their shortest decimal text, so `0.1` is 0.1, not the binary
//! float's expansion.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(i64),
    Float(f64),
    Text(String),
}

fn parse<E: serde::de::Error>(raw: Raw) -> Result<Decimal, E> {
    let text = match raw {
        Raw::Int(i) => return Ok(Decimal::from(i)),
        Raw::Float(f) if f.is_finite() => f.to_string(),
        Raw::Float(f) => return Err(E::custom(format!("not a finite amount: {f}"))),
        Raw::Text(t) => t,
    };
    Decimal::from_str(text.trim()).map_err(|e| E::custom(format!("invalid amount {text:?}: {e}")))
}

/// `#[serde(deserialize_with = "amount::de")]`.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    parse(Raw::deserialize(d)?)
}

/// `#[serde(deserialize_with = "amount::de_opt")]` for an optional amount.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    Option::<Raw>::deserialize(d)?
        .map(parse::<D::Error>)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "de")]
        a: Decimal,
        #[serde(default, deserialize_with = "de_opt")]
        b: Option<Decimal>,
    }

    #[test]
    fn strings_and_numbers() -> Result<(), serde_json::Error> {
        let t: T = serde_json::from_str(r#"{"a": 0.1, "b": "2.50"}"#)?;
        assert_eq!((t.a, t.b), (dec!(0.1), Some(dec!(2.5))));
        let t: T = serde_json::from_str(r#"{"a": 100}"#)?;
        assert_eq!((t.a, t.b), (dec!(100), None));
        let t: T = serde_json::from_str(r#"{"a": "1", "b": null}"#)?;
        assert_eq!(t.b, None);
        assert!(serde_json::from_str::<T>(r#"{"a": "x"}"#).is_err());
        Ok(())
    }
}
