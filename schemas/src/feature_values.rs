//! `Features.values`: indicator values by name, the Avro `map<double>` of the `features`
//! topic.
//!
//! A `BTreeMap<String, f64>` cost the features processor two dozen string allocations and a
//! sort per bar, and every reader as many again: most of the per-record work at high rates.
//! Here names are interned [`FeatureName`]s (a clone copies a pointer), values sit in one
//! vector sorted by name, and decoding reuses the names the process has already seen, so a
//! steady stream of records allocates one vector per record.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// An indicator name (`rsi_14`, `sma_20`...): cheap to clone, ordered as a string.
///
/// Names are interned process-wide as `&'static str` (a clone copies a pointer): two
/// processor tasks on two cores cloning and dropping the same reference-counted names for
/// every record made the count's cache line bounce between the cores (a few % of the
/// features processor's CPU). The interner keeps at most [`INTERNED_LIMIT`] distinct names,
/// so a producer inventing names per record cannot grow memory without bound; past it,
/// names are reference-counted.
#[derive(Clone)]
pub struct FeatureName(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

/// Distinct names the process-wide interner keeps.
pub const INTERNED_LIMIT: usize = 4096;

static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

impl FeatureName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// Whether this name is interned.
    #[cfg(test)]
    fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }

    /// The interned name for `s`: this thread's cache first, then the process-wide set
    /// (one lock per name per thread), adding `s` while the set has room.
    fn interned(s: &str) -> Self {
        thread_local! {
            static SEEN: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
        }
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            if let Some(known) = seen.get(s) {
                return Self(Repr::Static(known));
            }
            let global = {
                let mut set = INTERNED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let set = set.get_or_insert_with(HashSet::new);
                match set.get(s) {
                    Some(known) => Some(*known),
                    None if set.len() < INTERNED_LIMIT => {
                        // Leaked on purpose: interned names live as long as the process,
                        // and there are at most INTERNED_LIMIT of them.
                        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
                        set.insert(leaked);
                        Some(leaked)
                    }
                    None => None,
                }
            };
            match global {
                Some(name) => {
                    seen.insert(name);
                    Self(Repr::Static(name))
                }
                None => Self(Repr::Shared(Arc::from(s))),
            }
        })
    }
}

impl PartialEq for FeatureName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FeatureName {}

impl PartialOrd for FeatureName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FeatureName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for FeatureName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Borrow<str> for FeatureName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FeatureName {
    fn from(s: &str) -> Self {
        Self::interned(s)
    }
}

impl From<String> for FeatureName {
    fn from(s: String) -> Self {
        Self::interned(&s)
    }
}

/// Indicator values by name, each name at most once, iterated in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureValues(Vec<(FeatureName, f64)>);

impl FeatureValues {
    /// No values.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Values already in strictly increasing name order (the features processor's layout);
    /// anything else is sorted and de-duplicated (the last value of a name wins).
    pub fn from_sorted(mut entries: Vec<(FeatureName, f64)>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.reverse();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, earlier| later.0 == earlier.0);
        }
        Self(entries)
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&f64> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name`, returning its previous value.
    pub fn insert(&mut self, name: impl Into<FeatureName>, value: f64) -> Option<f64> {
        let name = name.into();
        match self.position(name.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<f64> {
        self.position(name).ok().map(|i| self.0.remove(i).1)
    }

    /// How many names have values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// Values in name order.
    pub fn values(&self) -> impl Iterator<Item = &f64> {
        self.0.iter().map(|(_, v)| v)
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &f64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl<K: Into<FeatureName>> FromIterator<(K, f64)> for FeatureValues {
    fn from_iter<I: IntoIterator<Item = (K, f64)>>(iter: I) -> Self {
        Self::from_sorted(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl std::ops::Index<&str> for FeatureValues {
    type Output = f64;
    /// Panics when `name` has no value, like a map's index.
    fn index(&self, name: &str) -> &f64 {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no feature value named {name:?}"),
        }
    }
}

impl Serialize for FeatureValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name.as_str(), value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FeatureValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = FeatureValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of feature names to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureValues, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some(name) = map.next_key::<NameKey>()? {
                    entries.push((name.0, map.next_value::<f64>()?));
                }
                Ok(FeatureValues::from_sorted(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A map key read as a [`FeatureName`] without an intermediate `String` when the format
/// lends the bytes.
struct NameKey(FeatureName);

impl<'de> Deserialize<'de> for NameKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = NameKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a feature name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<NameKey, E> {
                Ok(NameKey(FeatureName::interned(s)))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Behaves like the `BTreeMap<String, f64>` it replaced, through any inserts and
        /// removals, and serializes the same way.
        #[test]
        fn behaves_like_a_btreemap(
            ops in proptest::collection::vec((0u8..12, any::<bool>(), -1e6f64..1e6), 0..60)
        ) {
            let mut ours = FeatureValues::new();
            let mut reference: BTreeMap<String, f64> = BTreeMap::new();
            for (k, insert, v) in ops {
                let name = format!("f_{k}");
                if insert {
                    prop_assert_eq!(ours.insert(name.as_str(), v), reference.insert(name, v));
                } else {
                    prop_assert_eq!(ours.remove(&name), reference.remove(&name));
                }
                prop_assert_eq!(ours.len(), reference.len());
                let pairs: Vec<(&str, f64)> = ours.iter().map(|(k, v)| (k, *v)).collect();
                let want: Vec<(&str, f64)> =
                    reference.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                prop_assert_eq!(pairs, want);
            }
            prop_assert_eq!(
                serde_json::to_string(&ours).map_err(|e| TestCaseError::fail(e.to_string()))?,
                serde_json::to_string(&reference).map_err(|e| TestCaseError::fail(e.to_string()))?
            );
        }
    }

    #[test]
    fn unsorted_input_is_sorted_and_the_last_duplicate_wins() {
        let v: FeatureValues = [("b", 1.0), ("a", 2.0), ("b", 3.0)].into_iter().collect();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![("a", &2.0), ("b", &3.0)]);
        let json = r#"{"z": 1.0, "a": 2.0}"#;
        let v: FeatureValues = serde_json::from_str(json).expect("parses");
        assert_eq!(v.keys().collect::<Vec<_>>(), vec!["a", "z"]);
        assert_eq!(v["z"], 1.0);
    }

    #[test]
    fn decoding_shares_names() {
        let a: FeatureValues = serde_json::from_str(r#"{"rsi_14": 1.0}"#).expect("parses");
        let b: FeatureValues = serde_json::from_str(r#"{"rsi_14": 2.0}"#).expect("parses");
        let (x, y) = (&a.0[0].0, &b.0[0].0);
        assert!(x.is_static() && y.is_static());
        assert!(std::ptr::eq(x.as_str(), y.as_str()));
    }
}
