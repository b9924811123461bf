//! The envelope of processor state snapshots (see [`crate::Processor::snapshot`]): one
//! format-version byte, then MessagePack with named fields. Named fields keep a snapshot
//! readable after fields are added with defaults; the version byte makes a core refuse, with
//! a clear message, state it would misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `state` behind `format`.
pub fn encode<T: Serialize>(format: u8, state: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![format];
    rmp_serde::encode::write_named(&mut out, state).map_err(|e| format!("cannot encode: {e}"))?;
    Ok(out)
}

/// Decodes a snapshot written by [`encode`] with the same `format`.
pub fn decode<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T, String> {
    let Some((&found, body)) = bytes.split_first() else {
        return Err("the snapshot is empty".into());
    };
    if found != format {
        return Err(format!(
            "snapshot format version {found}, this build reads version {format}"
        ));
    }
    rmp_serde::from_slice(body).map_err(|e| format!("corrupt snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn round_trips_and_refuses_other_versions_and_garbage() {
        let state = BTreeMap::from([("a".to_string(), f64::NAN), ("b".to_string(), 1.5)]);
        let bytes = encode(3, &state).expect("encode");
        let back: BTreeMap<String, f64> = decode(3, &bytes).expect("decode");
        assert!(back["a"].is_nan());
        assert_eq!(back["b"], 1.5);
        assert!(decode::<BTreeMap<String, f64>>(4, &bytes).is_err());
        assert!(decode::<BTreeMap<String, f64>>(3, &[]).is_err());
        assert!(decode::<BTreeMap<String, f64>>(3, &[3, 0xc1]).is_err());
    }
}
