//! The Rust record types and the `.avsc` files must not drift apart: every field of the type is
//! in the schema under the same name, in the same order, with a compatible type, and a record
//! survives an Avro round trip through the schema unchanged.

// The datum helpers are the shortest way to a raw, registry-free Avro round trip.
#![allow(deprecated)]

use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tradestream_schemas::topics::DEAD_LETTER_SCHEMA;
use tradestream_schemas::{Record, Topic, samples};

fn schema_field_names(schema: &Schema) -> Vec<String> {
    match schema {
        Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
        other => panic!("expected a record schema, got {other:?}"),
    }
}

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(schema_text: &str, sample: &T) {
    let schema = Schema::parse_str(schema_text).expect("schema parses");
    let value = to_value(sample).expect("serializes to an Avro value");
    let Value::Record(fields) = &value else {
        panic!("not a record: {value:?}")
    };
    let rust_names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        rust_names,
        schema_field_names(&schema),
        "field names/order drifted"
    );
    let resolved = value
        .resolve(&schema)
        .expect("the type's value is valid for the schema");
    let bytes = to_avro_datum(&schema, resolved).expect("encodes");
    let decoded = from_avro_datum(&schema, &mut bytes.as_slice(), None).expect("decodes");
    let back: T = from_value(&decoded).expect("deserializes into the type");
    assert_eq!(&back, sample);
}

fn check_record<R: Record + PartialEq + Debug>(sample: R) {
    assert!(sample.validate().is_ok(), "sample must be valid");
    check(R::TOPIC.schema(), &sample);
}

#[test]
fn market_data_matches_schema() {
    check_record(samples::market_data());
}

#[test]
fn features_match_schema() {
    check_record(samples::features());
}

#[test]
fn trading_signals_match_schema() {
    check_record(samples::trading_signal());
}

#[test]
fn anomalies_match_schema() {
    check_record(samples::anomaly());
}

#[test]
fn orders_match_schema() {
    check_record(samples::order());
    let mut market = samples::order();
    market.order_type = tradestream_schemas::OrderType::Market;
    market.limit_price = None;
    market.client_order_id = None;
    check_record(market);
}

#[test]
fn fills_match_schema() {
    check_record(samples::fill());
}

#[test]
fn controls_match_schema() {
    check_record(samples::control());
    let mut off = samples::control();
    off.enabled = false;
    check_record(off);
}

#[test]
fn valuations_match_schema() {
    check_record(samples::valuation());
}

#[test]
fn valuation_validation_names_the_field() {
    let mut v = samples::valuation();
    v.total_value += rust_decimal::Decimal::ONE;
    assert_eq!(v.validate().expect_err("sum").field, "total_value");
    let mut v = samples::valuation();
    v.valuation_id = "someone-else:step:3".into();
    assert_eq!(
        v.validate().expect_err("other account").field,
        "valuation_id"
    );
}

#[test]
fn control_validation_names_the_field() {
    let mut c = samples::control();
    c.name = "SELF_DESTRUCT".into();
    assert_eq!(c.validate().expect_err("unknown name").field, "name");
    let mut c = samples::control();
    c.reason = "  ".into();
    assert_eq!(c.validate().expect_err("empty reason").field, "reason");
    assert!(samples::control().validate().is_ok());
}

#[test]
fn every_topic_includes_controls_but_the_data_topics_do_not() {
    assert!(Topic::EVERY.contains(&Topic::Controls));
    assert!(!Topic::ALL.contains(&Topic::Controls));
    assert_eq!(Topic::from_name("controls"), Some(Topic::Controls));
    assert_eq!(
        Topic::Controls.key_field(),
        tradestream_schemas::KeyField::ControlName
    );
}

#[test]
fn dead_letter_matches_schema() {
    check(DEAD_LETTER_SCHEMA, &samples::dead_letter());
}

#[test]
fn every_topic_schema_is_a_named_record_with_docs() {
    for topic in Topic::EVERY {
        let json: serde_json::Value = serde_json::from_str(topic.schema()).expect("json");
        assert_eq!(json["type"], "record", "{topic}");
        assert!(json["doc"].is_string(), "{topic} has a doc");
        for f in json["fields"].as_array().expect("fields") {
            assert!(f["doc"].is_string(), "{topic}.{} has a doc", f["name"]);
        }
    }
}

#[test]
fn drift_is_detected() {
    // A schema missing one of the type's fields must fail the field-name check.
    let mut json: serde_json::Value = serde_json::from_str(Topic::Fills.schema()).expect("json");
    json["fields"].as_array_mut().expect("fields").pop();
    let schema = Schema::parse_str(&json.to_string()).expect("parses");
    let value = to_value(samples::fill()).expect("value");
    let Value::Record(fields) = &value else {
        panic!()
    };
    assert_ne!(fields.len(), schema_field_names(&schema).len());
}
