//! A schema as submitted to the registry: validated, parsed and given its identity.
//!
//! Confluent hands out one global id per distinct schema, so the registry needs a notion of
//! "the same schema". Avro's *Parsing Canonical Form* is the wrong one for that: it strips
//! `default`, `logicalType`, `doc` and `aliases`, so `int` and `int`/`date` would share an id and
//! adding a default to a field (the usual way to make a change compatible) would silently be
//! "already registered". The identity used here is the schema re-serialised from its parsed
//! form instead: whitespace, key order and namespace spelling no longer matter, everything that
//! changes how data is read or documented still does. The Parsing Canonical Form is kept as well
//! for operators who compare against other tools.

use apache_avro::Schema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::RegistryError;

/// The only schema type this registry serves.
pub const AVRO: &str = "AVRO";

/// The body of register, lookup and compatibility requests (`POST .../versions` and friends).
///
/// Unknown members are ignored, as Confluent's registry does, so newer clients keep working.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// The schema itself, as a JSON document inside a string.
    pub schema: String,
    /// `AVRO` (the default when absent); other types are refused.
    #[serde(default)]
    pub schema_type: Option<String>,
    /// Schema references; only an empty list is supported.
    #[serde(default)]
    pub references: Option<Vec<serde_json::Value>>,
    /// Data-contract metadata; only absent or empty is supported.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Data-contract rules; only absent or empty is supported.
    #[serde(default)]
    pub rule_set: Option<serde_json::Value>,
}

/// A validated Avro schema with its registry identity.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    schema: Schema,
    text: String,
    canonical: String,
    parsing_canonical_form: String,
    fingerprint: [u8; 32],
}

impl ParsedSchema {
    /// Parses an Avro schema given as JSON text.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.trim().is_empty() {
            return Err(RegistryError::InvalidSchema(
                "the schema is empty".to_owned(),
            ));
        }
        // Postgres text cannot hold NUL; refuse it here rather than fail in the database.
        if text.contains('\0') {
            return Err(RegistryError::InvalidSchema(
                "the schema contains a NUL character".to_owned(),
            ));
        }
        let schema = Schema::parse_str(text)
            .map_err(|e| RegistryError::InvalidSchema(format!("invalid Avro schema: {e}")))?;
        let canonical = serde_json::to_string(&schema).map_err(|e| {
            RegistryError::InvalidSchema(format!("the schema cannot be normalised: {e}"))
        })?;
        if canonical.contains("\\u0000") {
            return Err(RegistryError::InvalidSchema(
                "the schema contains a NUL character".to_owned(),
            ));
        }
        let parsing_canonical_form = schema.canonical_form();
        let fingerprint = Sha256::digest(canonical.as_bytes()).into();
        Ok(Self {
            schema,
            text: text.to_owned(),
            canonical,
            parsing_canonical_form,
            fingerprint,
        })
    }

    /// Validates a request body and parses its schema: `AVRO` only, no references, no
    /// data-contract metadata or rules.
    pub fn from_request(request: &SchemaRequest) -> Result<Self, RegistryError> {
        if let Some(schema_type) = &request.schema_type
            && !schema_type.eq_ignore_ascii_case(AVRO)
        {
            return Err(RegistryError::UnsupportedSchemaType(schema_type.clone()));
        }
        if request.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported by this registry; inline the referenced \
                 named types into the schema"
                    .to_owned(),
            ));
        }
        for (name, value) in [
            ("metadata", &request.metadata),
            ("ruleSet", &request.rule_set),
        ] {
            if value.as_ref().is_some_and(|v| !is_empty_json(v)) {
                return Err(RegistryError::InvalidSchema(format!(
                    "'{name}' (data contracts) is not supported by this registry"
                )));
            }
        }
        Self::parse(&request.schema)
    }

    /// The parsed schema, for compatibility checks.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema text exactly as submitted.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The normalised form that decides whether two submissions are the same schema.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Avro's Parsing Canonical Form (drops defaults, docs, aliases and logical types).
    pub fn parsing_canonical_form(&self) -> &str {
        &self.parsing_canonical_form
    }

    /// SHA-256 of [`Self::canonical`]: the registry's uniqueness key.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

/// `null`, `{}`, `[]` and objects whose members are all empty count as "nothing set"; clients
/// send `"metadata": {"properties": {}}` or similar when the user set nothing.
fn is_empty_json(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        serde_json::Value::Object(members) => members.values().all(is_empty_json),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedSchema {
        ParsedSchema::parse(text).expect("test schema parses")
    }

    #[test]
    fn formatting_and_key_order_do_not_change_identity() {
        let a = parse(
            r#"{"type":"record","name":"T","namespace":"n","fields":[{"name":"x","type":"int"}]}"#,
        );
        let b = parse(
            r#"{
                "namespace": "n",
                "fields": [ { "type": "int", "name": "x" } ],
                "name": "T", "type": "record"
            }"#,
        );
        let c = parse(r#"{"type":"record","name":"n.T","fields":[{"name":"x","type":"int"}]}"#);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), c.fingerprint());
        assert_ne!(a.text(), b.text(), "the submitted text is kept as is");
    }

    #[test]
    fn defaults_and_logical_types_change_identity_unlike_parsing_canonical_form() {
        let plain = parse(r#"{"type":"record","name":"T","fields":[{"name":"x","type":"int"}]}"#);
        let defaulted = parse(
            r#"{"type":"record","name":"T","fields":[{"name":"x","type":"int","default":0}]}"#,
        );
        let dated = parse(
            r#"{"type":"record","name":"T","fields":[{"name":"x","type":{"type":"int","logicalType":"date"}}]}"#,
        );
        assert_eq!(
            plain.parsing_canonical_form(),
            defaulted.parsing_canonical_form()
        );
        // The spec's form would merge `dated` with `plain` too; apache-avro 0.22 happens to keep
        // `{"type":"int"}` there instead of `"int"`, one more reason not to key ids on it.
        assert_ne!(plain.fingerprint(), defaulted.fingerprint());
        assert_ne!(plain.fingerprint(), dated.fingerprint());
        assert_ne!(defaulted.fingerprint(), dated.fingerprint());
    }

    #[test]
    fn primitive_schemas_parse() {
        assert_eq!(parse(r#""string""#).canonical(), r#""string""#);
        assert_eq!(
            parse(r#"{"type":"string"}"#).fingerprint(),
            parse(r#""string""#).fingerprint()
        );
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_reason() {
        for bad in [
            "",
            "   ",
            "not json",
            r#"{"type":"record","name":"T"}"#,
            r#"{"type":"record","name":"T","fields":[{"name":"x","type":"Missing"}]}"#,
            "\"str\0ing\"",
        ] {
            match ParsedSchema::parse(bad) {
                Err(RegistryError::InvalidSchema(reason)) => assert!(!reason.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    fn request(json: serde_json::Value) -> SchemaRequest {
        serde_json::from_value(json).expect("request deserializes")
    }

    #[test]
    fn requests_accept_avro_and_empty_extras_only() {
        let ok = request(serde_json::json!({
            "schema": "\"long\"", "schemaType": "AVRO", "references": [],
            "metadata": {"properties": {}}, "ruleSet": null, "somethingNew": 1
        }));
        assert!(ParsedSchema::from_request(&ok).is_ok());
        let no_type = request(serde_json::json!({"schema": "\"long\""}));
        assert!(ParsedSchema::from_request(&no_type).is_ok());

        let protobuf = request(
            serde_json::json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
        );
        assert!(matches!(
            ParsedSchema::from_request(&protobuf),
            Err(RegistryError::UnsupportedSchemaType(t)) if t == "PROTOBUF"
        ));
        let referenced = request(serde_json::json!({
            "schema": "\"long\"",
            "references": [{"name": "a", "subject": "b", "version": 1}]
        }));
        assert!(matches!(
            ParsedSchema::from_request(&referenced),
            Err(RegistryError::InvalidSchema(m)) if m.contains("references")
        ));
        let contract = request(serde_json::json!({
            "schema": "\"long\"", "metadata": {"properties": {"owner": "me"}}
        }));
        assert!(matches!(
            ParsedSchema::from_request(&contract),
            Err(RegistryError::InvalidSchema(m)) if m.contains("metadata")
        ));
    }
}
