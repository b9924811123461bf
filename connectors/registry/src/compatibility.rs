//! Compatibility levels and the checks behind them.
//!
//! The registry promises consumers that data written with one version of a subject can be read
//! with another. Which direction is promised is the subject's *compatibility level*, with the
//! same names and meaning as Confluent's registry. The Avro resolution rules themselves come from
//! `apache_avro::schema_compatibility`; this module picks the pairs to check, treats the crate's
//! "partial" verdicts as incompatible (as Avro Java and Confluent do) and turns failures into
//! messages a person can act on.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// A subject's compatibility promise, as named by Confluent's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No checks at all.
    None,
    /// The new schema can read data written with the latest version.
    Backward,
    /// The new schema can read data written with every live version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every live version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every live version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// The level a registry starts with, as Confluent's does.
    pub const DEFAULT: Self = Self::Backward;

    /// Every level, in the order Confluent documents them.
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The wire name (`"BACKWARD_TRANSITIVE"`), also what the database stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the check runs against every live version rather than only the latest one.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// Whether the new schema must read old data.
    fn checks_backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Whether old schemas must read new data.
    fn checks_forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = RegistryError;

    /// Case-insensitive, like Confluent's registry (clients send both `backward` and `BACKWARD`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| RegistryError::InvalidCompatibilityLevel(s.to_owned()))
    }
}

/// One registered version to check a candidate against.
#[derive(Debug, Clone, Copy)]
pub struct PreviousVersion<'a> {
    /// The version number within the subject, used in messages.
    pub version: i32,
    /// The parsed schema of that version.
    pub schema: &'a Schema,
}

/// Checks `candidate` against `previous` (live versions, **newest first**) under `level`.
///
/// Returns one message per failed check; an empty list means compatible. Non-transitive levels
/// look only at the newest version, transitive ones at all of them.
pub fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    previous: &[PreviousVersion<'_>],
) -> Vec<String> {
    let targets = if level.is_transitive() {
        previous
    } else {
        &previous[..previous.len().min(1)]
    };
    let mut messages = Vec::new();
    for old in targets {
        let old_label = format!("version {}", old.version);
        if level.checks_backward()
            && let Some(reason) = can_read(old.schema, candidate, "the new schema", &old_label)
        {
            messages.push(format!(
                "{level}: the new schema cannot read data written with {old_label}: {reason}"
            ));
        }
        if level.checks_forward()
            && let Some(reason) = can_read(candidate, old.schema, &old_label, "the new schema")
        {
            messages.push(format!(
                "{level}: {old_label} cannot read data written with the new schema: {reason}"
            ));
        }
    }
    messages
}

/// `None` when `reader` can read everything `writer` can write, else the reason why not.
fn can_read(
    writer: &Schema,
    reader: &Schema,
    reader_label: &str,
    writer_label: &str,
) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        // apache-avro calls it "partial" when only some writer values resolve (a writer enum
        // symbol or union branch the reader lacks). Avro Java and Confluent call that
        // incompatible: a consumer would fail on the first such record.
        Ok(Compatibility::Partial) => Some(format!(
            "some values written with {writer_label} cannot be read by {reader_label} \
             (a union branch or enum symbol of {writer_label} is missing from {reader_label})"
        )),
        Err(e) => Some(describe(&e, reader_label, writer_label)),
    }
}

/// Renders a compatibility error in terms of the two schemas involved, following nested field
/// errors so the message names the path to the offending field.
fn describe(error: &CompatibilityError, reader: &str, writer: &str) -> String {
    match error {
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            format!("field '{field}': {}", describe(inner, reader, writer))
        }
        CompatibilityError::MissingDefaultValue(field) => {
            format!("field '{field}' in {reader} has no default value and is missing from {writer}")
        }
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => format!(
            "{writer} has type {} where {reader} has type {}",
            kind_name(writer_schema_type),
            kind_name(reader_schema_type)
        ),
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => format!(
            "named type '{writer_name}' in {writer} does not match '{reader_name}' in {reader}"
        ),
        CompatibilityError::MissingSymbols => {
            format!("{reader} has none of the enum symbols of {writer} and no enum default")
        }
        CompatibilityError::MissingUnionElements => {
            format!("no branch of the union in {writer} can be read by the union in {reader}")
        }
        CompatibilityError::SchemaMismatchAllUnionElements => {
            format!("no union branch matches between {writer} and {reader}")
        }
        other => other.to_string(),
    }
}

/// apache-avro renders the mismatching schemas with `{:#?}` (a multi-line dump for records);
/// the variant name alone is what a reader of the message needs.
fn kind_name(debug: &str) -> String {
    let head: String = debug
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if head.is_empty() {
        debug.trim().to_owned()
    } else {
        head.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Schema {
        Schema::parse_str(s).expect("test schema parses")
    }

    const V1: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream",
        "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"}]}"#;
    /// V1 plus an optional field with a default: readable both ways.
    const V2_OPTIONAL: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream",
        "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"},
                  {"name":"venue","type":["null","string"],"default":null}]}"#;
    /// V1 plus a required field: new readers cannot read old data.
    const V2_REQUIRED: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream",
        "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"},
                  {"name":"venue","type":"string"}]}"#;
    /// V1 without `qty`: new readers are fine, old readers miss a field without default.
    const V2_DROPPED: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream",
        "fields":[{"name":"symbol","type":"string"}]}"#;
    /// `qty` changed from long to string.
    const V2_RETYPED: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream",
        "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"boolean"}]}"#;

    fn check_one(level: CompatibilityLevel, old: &str, new: &str) -> Vec<String> {
        let old = parse(old);
        let new = parse(new);
        check(
            level,
            &new,
            &[PreviousVersion {
                version: 1,
                schema: &old,
            }],
        )
    }

    #[test]
    fn levels_parse_case_insensitively_and_round_trip() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(
                level.as_str().parse::<CompatibilityLevel>().ok(),
                Some(level)
            );
            assert_eq!(
                level
                    .as_str()
                    .to_lowercase()
                    .parse::<CompatibilityLevel>()
                    .ok(),
                Some(level)
            );
            let json = serde_json::to_string(&level).expect("serializes");
            assert_eq!(json, format!("\"{}\"", level.as_str()));
        }
        assert!(matches!(
            "SIDEWAYS".parse::<CompatibilityLevel>(),
            Err(RegistryError::InvalidCompatibilityLevel(s)) if s == "SIDEWAYS"
        ));
    }

    #[test]
    fn optional_field_with_default_is_fully_compatible() {
        for level in CompatibilityLevel::ALL {
            assert!(
                check_one(level, V1, V2_OPTIONAL).is_empty(),
                "{level} should accept an optional field with a default"
            );
        }
    }

    #[test]
    fn required_field_breaks_backward_but_not_forward() {
        let messages = check_one(CompatibilityLevel::Backward, V1, V2_REQUIRED);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("field 'venue'"), "{}", messages[0]);
        assert!(messages[0].contains("no default value"), "{}", messages[0]);
        assert!(check_one(CompatibilityLevel::Forward, V1, V2_REQUIRED).is_empty());
        assert_eq!(
            check_one(CompatibilityLevel::Full, V1, V2_REQUIRED).len(),
            1
        );
        assert!(check_one(CompatibilityLevel::None, V1, V2_REQUIRED).is_empty());
    }

    #[test]
    fn dropped_field_breaks_forward_but_not_backward() {
        assert!(check_one(CompatibilityLevel::Backward, V1, V2_DROPPED).is_empty());
        let messages = check_one(CompatibilityLevel::Forward, V1, V2_DROPPED);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("FORWARD: version 1 cannot read"),
            "{}",
            messages[0]
        );
        assert!(messages[0].contains("field 'qty'"), "{}", messages[0]);
    }

    #[test]
    fn type_change_names_field_and_both_types() {
        let messages = check_one(CompatibilityLevel::Backward, V1, V2_RETYPED);
        assert_eq!(
            messages,
            vec![
                "BACKWARD: the new schema cannot read data written with version 1: \
                 field 'qty': version 1 has type long where the new schema has type boolean"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn promotion_is_one_way() {
        let int_v = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"int"}]}"#;
        let long_v = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#;
        // A long reader reads ints; an int reader cannot read longs.
        assert!(check_one(CompatibilityLevel::Backward, int_v, long_v).is_empty());
        assert_eq!(
            check_one(CompatibilityLevel::Forward, int_v, long_v).len(),
            1
        );
        assert_eq!(check_one(CompatibilityLevel::Full, int_v, long_v).len(), 1);
    }

    #[test]
    fn missing_enum_symbol_is_incompatible_not_partial() {
        let abc = r#"{"type":"enum","name":"Side","symbols":["BUY","SELL","SHORT"]}"#;
        let ab = r#"{"type":"enum","name":"Side","symbols":["BUY","SELL"]}"#;
        // Old data may hold SHORT, which the new reader lacks.
        let messages = check_one(CompatibilityLevel::Backward, abc, ab);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("enum symbol"), "{}", messages[0]);
        assert!(check_one(CompatibilityLevel::Forward, abc, ab).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_version_others_only_the_latest() {
        // v3 conflicts with v1 only: the non-transitive level never looks at v1.
        let v1 = parse(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#);
        let v2 = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},
                {"name":"b","type":"string","default":""}]}"#,
        );
        // New schema requires `b` without default: v2 data has it, v1 data does not.
        let v3 = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},
                {"name":"b","type":"string"}]}"#,
        );
        let previous = [
            PreviousVersion {
                version: 2,
                schema: &v2,
            },
            PreviousVersion {
                version: 1,
                schema: &v1,
            },
        ];
        assert!(check(CompatibilityLevel::Backward, &v3, &previous).is_empty());
        let messages = check(CompatibilityLevel::BackwardTransitive, &v3, &previous);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("version 1"), "{}", messages[0]);
        assert_eq!(
            check(CompatibilityLevel::FullTransitive, &v3, &previous).len(),
            1,
            "v3 -> v1/v2 forward is fine (extra field ignored), backward from v1 fails"
        );
    }

    #[test]
    fn first_version_is_always_compatible() {
        let v = parse(V1);
        for level in CompatibilityLevel::ALL {
            assert!(check(level, &v, &[]).is_empty());
        }
    }

    #[test]
    fn kind_name_strips_debug_dumps() {
        assert_eq!(kind_name("Long"), "long");
        assert_eq!(
            kind_name("Record(\n    RecordSchema {\n name: ..."),
            "record"
        );
        assert_eq!(kind_name(""), "");
    }
}
