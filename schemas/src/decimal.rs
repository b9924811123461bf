//! Serde glue for the Avro `decimal` logical type (bytes, precision 28, scale 8).
//!
//! Avro carries a decimal as the big-endian two's-complement bytes of its unscaled value at the
//! schema's fixed scale. Every money and quantity field in our contracts uses scale [`SCALE`], so a
//! `rust_decimal::Decimal` maps to it exactly; a value with more fractional digits than the
//! scale is refused instead of silently rounded, because a rounded price is a different price.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

/// Fixed scale (digits after the decimal point) of every Avro decimal in the contracts.
pub const SCALE: u32 = 8;
/// Avro precision of every decimal in the contracts; rust_decimal holds 28 digits.
pub const PRECISION: u32 = 28;
/// Bytes per encoded decimal: the smallest two's-complement width whose range covers
/// [`PRECISION`] digits (2^95 > 10^28).
pub const WIRE_BYTES: usize = 12;

/// Unscaled big-endian two's-complement bytes of `value` at [`SCALE`].
pub fn to_avro_bytes(value: &Decimal) -> Result<Vec<u8>, String> {
    let mut v = *value;
    if v.scale() > SCALE {
        let rounded = v.round_dp(SCALE);
        if rounded != v {
            return Err(format!(
                "decimal {value} has more than {SCALE} decimal places"
            ));
        }
        v = rounded;
    }
    v.rescale(SCALE);
    if v.scale() != SCALE {
        return Err(format!(
            "decimal {value} does not fit precision {PRECISION} at scale {SCALE}"
        ));
    }
    let unscaled = v.mantissa();
    if unscaled.unsigned_abs() >= 1u128 << 95 {
        return Err(format!(
            "decimal {value} does not fit precision {PRECISION} at scale {SCALE}"
        ));
    }
    // Always WIRE_BYTES long: apache-avro refuses to write a decimal whose byte length could
    // not hold the schema's full precision, so the minimal two's-complement form is not enough.
    let bytes = unscaled.to_be_bytes();
    Ok(bytes[16 - WIRE_BYTES..].to_vec())
}

/// Decimal from unscaled big-endian two's-complement bytes at [`SCALE`].
pub fn from_avro_bytes(bytes: &[u8]) -> Result<Decimal, String> {
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("decimal must be 1..=16 bytes, got {}", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(buf);
    Decimal::try_from_i128_with_scale(unscaled, SCALE)
        .map(|d| d.normalize())
        .map_err(|e| format!("decimal out of range: {e}"))
}

/// `#[serde(with = "decimal::avro")]` for a required decimal field.
pub mod avro {
    use super::*;

    /// Serializes as Avro decimal bytes.
    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        let bytes = to_avro_bytes(value).map_err(S::Error::custom)?;
        s.serialize_bytes(&bytes)
    }

    /// Deserializes from Avro decimal bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        from_avro_bytes(&bytes).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "decimal::avro_option")]` for a `["null", decimal]` field.
pub mod avro_option {
    use super::*;

    /// Serializes `None` as null, `Some` as Avro decimal bytes.
    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(v) => {
                let bytes = to_avro_bytes(v).map_err(S::Error::custom)?;
                s.serialize_some(serde_bytes::Bytes::new(&bytes))
            }
        }
    }

    /// Deserializes null or Avro decimal bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        let bytes: Option<serde_bytes::ByteBuf> = Deserialize::deserialize(d)?;
        bytes
            .map(|b| from_avro_bytes(&b).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    #[test]
    fn known_encodings() -> Result<(), String> {
        // 1.00000000 -> unscaled 100_000_000 = 0x05F5E100
        let mut one = vec![0u8; 8];
        one.extend([0x05, 0xF5, 0xE1, 0x00]);
        assert_eq!(to_avro_bytes(&Decimal::ONE)?, one);
        assert_eq!(to_avro_bytes(&Decimal::ZERO)?, vec![0u8; 12]);
        // -0.00000001 -> unscaled -1 = all ones
        let tiny = Decimal::from_str("-0.00000001").map_err(|e| e.to_string())?;
        assert_eq!(to_avro_bytes(&tiny)?, vec![0xFF; 12]);
        // minimal encodings written by other producers decode too
        assert_eq!(
            from_avro_bytes(&[0x00, 0x80])?,
            Decimal::from_str("0.00000128").map_err(|e| e.to_string())?
        );
        assert_eq!(from_avro_bytes(&[0xFF])?, tiny);
        Ok(())
    }

    #[test]
    fn refuses_more_than_eight_places() {
        let d = Decimal::from_str("1.000000001").expect("literal");
        assert!(to_avro_bytes(&d).is_err());
        // trailing zeros beyond the scale are not extra precision
        let d = Decimal::from_str("1.5000000000").expect("literal");
        assert!(to_avro_bytes(&d).is_ok());
    }

    proptest! {
        #[test]
        fn round_trips(unscaled in -(10i128.pow(28) - 1)..10i128.pow(28)) {
            let d = Decimal::from_i128_with_scale(unscaled, SCALE);
            let back = from_avro_bytes(&to_avro_bytes(&d).map_err(TestCaseError::fail)?)
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(back, d);
        }
    }
}
