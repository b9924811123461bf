//! The schema registry end to end: served on a loopback port over a fresh, migrated Postgres
//! database and driven by an unmodified Confluent client (`schema_registry_converter`) and by
//! raw HTTP, the way `confluent-kafka`, Kafka Connect or curl would call it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use apache_avro::types::Value as Avro;
use reqwest::StatusCode;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tradestream_postgres::testing::TestDatabase;
use tradestream_registry::{CONTENT_TYPE_V1, RegistryError, RegistryState, serve};

const TRADE_V1: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream.test",
  "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"}]}"#;
/// V1 plus an optional field with a null default: BACKWARD (and FULL) compatible.
const TRADE_V2: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream.test",
  "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"},
            {"name":"venue","type":["null","string"],"default":null}]}"#;
/// V2 plus a required field: a V3 reader cannot read V2 data.
const TRADE_REQUIRED: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream.test",
  "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"long"},
            {"name":"venue","type":["null","string"],"default":null},
            {"name":"trader","type":"string"}]}"#;
/// V2 with `qty` turned into a string.
const TRADE_RETYPED: &str = r#"{"type":"record","name":"Trade","namespace":"tradestream.test",
  "fields":[{"name":"symbol","type":"string"},{"name":"qty","type":"string"},
            {"name":"venue","type":["null","string"],"default":null}]}"#;

/// A registry served on 127.0.0.1:0 until stopped.
struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RegistryError>>,
}

impl Server {
    async fn start(pool: PgPool) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, RegistryState::new(pool), async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            stop: Some(stop),
            task,
        })
    }

    /// Graceful shutdown: the server must return by itself once told to stop.
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("registry did not shut down")???;
        Ok(())
    }
}

/// Raw HTTP against the registry, checking the media type of every answer.
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE_V1);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_V1)
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await?;
        ensure!(
            content_type == CONTENT_TYPE_V1,
            "{path}: content type {content_type:?}"
        );
        let value = serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))?;
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(StatusCode, Value)> {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Registers and returns the id, failing on anything but 200.
    async fn register(&self, subject: &str, schema: &str) -> Result<i64> {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({"schema": schema}),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "register {subject}: {status} {body}"
        );
        body["id"].as_i64().context("no id in register response")
    }
}

fn error_code(body: &Value) -> Option<i64> {
    body["error_code"].as_i64()
}

fn supplied(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned())
}

#[derive(Debug, Serialize)]
struct TradeV1 {
    symbol: String,
    qty: i64,
}

#[derive(Debug, Serialize)]
struct TradeV2 {
    symbol: String,
    qty: i64,
    venue: Option<String>,
}

fn record_fields(value: &Avro) -> Result<Vec<(String, Avro)>> {
    match value {
        Avro::Record(fields) => Ok(fields.clone()),
        other => anyhow::bail!("expected a record, got {other:?}"),
    }
}

fn schema_id_of(bytes: &[u8]) -> Result<i64> {
    ensure!(
        bytes.len() > 5 && bytes[0] == 0,
        "not Confluent framing: {bytes:?}"
    );
    Ok(i64::from(u32::from_be_bytes([
        bytes[1], bytes[2], bytes[3], bytes[4],
    ])))
}

#[tokio::test]
async fn confluent_rust_client_registers_encodes_and_decodes() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let encoder = AvroEncoder::new(SrSettings::new(server.url.clone()));
    let decoder = AvroDecoder::new(SrSettings::new(server.url.clone()));

    let v1 = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "trades".into(),
        false,
        supplied(TRADE_V1),
    );
    let bytes_v1 = encoder
        .encode_struct(
            TradeV1 {
                symbol: "NDAQ".into(),
                qty: 100,
            },
            &v1,
        )
        .await?;
    let id_v1 = schema_id_of(&bytes_v1)?;
    let decoded = decoder.decode(Some(&bytes_v1)).await?;
    assert_eq!(
        record_fields(&decoded.value)?,
        vec![
            ("symbol".to_owned(), Avro::String("NDAQ".into())),
            ("qty".to_owned(), Avro::Long(100)),
        ]
    );
    let name = decoded.name.context("decoded record has a name")?;
    assert_eq!(name.fullname(None), "tradestream.test.Trade");

    // A BACKWARD-compatible evolution gets a new id. The converter caches one schema per
    // subject for an encoder's lifetime, so a new schema means a new encoder (a redeployed
    // producer), as in real use.
    let encoder = AvroEncoder::new(SrSettings::new(server.url.clone()));
    let v2 = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "trades".into(),
        false,
        supplied(TRADE_V2),
    );
    let bytes_v2 = encoder
        .encode_struct(
            TradeV2 {
                symbol: "AAPL".into(),
                qty: -5,
                venue: Some("XNAS".into()),
            },
            &v2,
        )
        .await?;
    let id_v2 = schema_id_of(&bytes_v2)?;
    assert_ne!(id_v1, id_v2);
    let decoded = decoder.decode(Some(&bytes_v2)).await?;
    assert_eq!(
        record_fields(&decoded.value)?,
        vec![
            ("symbol".to_owned(), Avro::String("AAPL".into())),
            ("qty".to_owned(), Avro::Long(-5)),
            (
                "venue".to_owned(),
                Avro::Union(1, Box::new(Avro::String("XNAS".into())))
            ),
        ]
    );

    // A producer without a schema of its own encodes with the latest version.
    let encoder = AvroEncoder::new(SrSettings::new(server.url.clone()));
    let latest = SubjectNameStrategy::TopicNameStrategy("trades".into(), false);
    let bytes_latest = encoder
        .encode(
            vec![
                ("symbol", Avro::String("MSFT".into())),
                ("qty", Avro::Long(7)),
                ("venue", Avro::Union(0, Box::new(Avro::Null))),
            ],
            latest,
        )
        .await?;
    assert_eq!(schema_id_of(&bytes_latest)?, id_v2);
    let decoded = decoder.decode(Some(&bytes_latest)).await?;
    assert_eq!(
        record_fields(&decoded.value)?[0].1,
        Avro::String("MSFT".into())
    );

    // Old records still decode (with their own schema) after the subject moved on.
    let decoded = decoder.decode(Some(&bytes_v1)).await?;
    assert_eq!(record_fields(&decoded.value)?.len(), 2);

    // An incompatible schema is refused, and the client surfaces the registry's reason.
    let encoder = AvroEncoder::new(SrSettings::new(server.url.clone()));
    let bad = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "trades".into(),
        false,
        supplied(TRADE_REQUIRED),
    );
    let error = encoder
        .encode(vec![("symbol", Avro::String("X".into()))], bad)
        .await
        .expect_err("an incompatible schema must be refused");
    let text = format!("{error:?}");
    assert!(text.contains("409"), "{text}");
    assert!(
        text.contains("incompatible") && text.contains("trader"),
        "{text}"
    );
    assert!(!error.retriable, "a 409 is not retryable");

    server.stop().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn register_lookup_versions_and_ids() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);

    assert_eq!(http.get("/").await?, (StatusCode::OK, json!({})));
    assert_eq!(
        http.get("/schemas/types").await?,
        (StatusCode::OK, json!(["AVRO"]))
    );
    assert_eq!(http.get("/subjects").await?, (StatusCode::OK, json!([])));

    let id1 = http.register("orders-value", TRADE_V1).await?;
    // Registering again, even reformatted, returns the same id and adds no version.
    let reformatted: Value = serde_json::from_str(TRADE_V1)?;
    assert_eq!(
        http.register("orders-value", &serde_json::to_string_pretty(&reformatted)?)
            .await?,
        id1
    );
    let (status, body) = http
        .post(
            "/subjects/orders-value/versions",
            json!({"schema": TRADE_V1, "schemaType": "AVRO", "references": []}),
        )
        .await?;
    assert_eq!((status, body), (StatusCode::OK, json!({"id": id1})));
    let id2 = http.register("orders-value", TRADE_V2).await?;
    assert_ne!(id1, id2);

    assert_eq!(
        http.get("/subjects").await?,
        (StatusCode::OK, json!(["orders-value"]))
    );
    assert_eq!(
        http.get("/subjects/orders-value/versions").await?,
        (StatusCode::OK, json!([1, 2]))
    );
    assert_eq!(
        http.get("/subjects/orders-value/versions/1").await?,
        (
            StatusCode::OK,
            json!({"subject": "orders-value", "id": id1, "version": 1, "schema": TRADE_V1})
        )
    );
    let (status, latest) = http.get("/subjects/orders-value/versions/latest").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (latest["version"].as_i64(), latest["id"].as_i64()),
        (Some(2), Some(id2))
    );
    let (status, raw) = http.get("/subjects/orders-value/versions/2/schema").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw, serde_json::from_str::<Value>(TRADE_V2)?);

    assert_eq!(
        http.get(&format!("/schemas/ids/{id1}")).await?,
        (StatusCode::OK, json!({"schema": TRADE_V1}))
    );
    // The converter's decoder asks with ?deleted=true.
    assert_eq!(
        http.get(&format!("/schemas/ids/{id2}?deleted=true"))
            .await?,
        (StatusCode::OK, json!({"schema": TRADE_V2}))
    );
    assert_eq!(
        http.get(&format!("/schemas/ids/{id2}/versions")).await?,
        (
            StatusCode::OK,
            json!([{"subject": "orders-value", "version": 2}])
        )
    );

    // Lookup finds the version whatever the formatting; Python sends booleans as `False`.
    let (status, found) = http
        .post(
            "/subjects/orders-value?normalize=False&deleted=False",
            json!({"schema": serde_json::to_string(&serde_json::from_str::<Value>(TRADE_V2)?)?}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        (found["version"].as_i64(), found["id"].as_i64()),
        (Some(2), Some(id2))
    );
    assert_eq!(found["subject"], json!("orders-value"));

    server.stop().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn backward_compatibility_is_enforced_with_clear_reasons() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);

    http.register("fills-value", TRADE_V1).await?;
    // Adding an optional field with a null default is BACKWARD compatible.
    let (status, body) = http
        .post(
            "/compatibility/subjects/fills-value/versions/latest",
            json!({"schema": TRADE_V2}),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    http.register("fills-value", TRADE_V2).await?;

    for (schema, field) in [(TRADE_REQUIRED, "trader"), (TRADE_RETYPED, "qty")] {
        let (status, body) = http
            .post("/subjects/fills-value/versions", json!({"schema": schema}))
            .await?;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(error_code(&body), Some(409));
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "Schema being registered is incompatible with an earlier schema for subject \"fills-value\""
            ),
            "{message}"
        );
        assert!(message.contains(&format!("field '{field}'")), "{message}");
        assert!(message.contains("version 2"), "{message}");

        let (status, body) = http
            .post(
                "/compatibility/subjects/fills-value/versions/latest?verbose=true",
                json!({"schema": schema}),
            )
            .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["is_compatible"], json!(false));
        let messages = body["messages"]
            .as_array()
            .context("verbose gives messages")?;
        assert!(
            messages
                .iter()
                .any(|m| m.as_str().is_some_and(|m| m.contains(field))),
            "{body}"
        );
    }
    // A refused registration leaves nothing behind.
    assert_eq!(
        http.get("/subjects/fills-value/versions").await?,
        (StatusCode::OK, json!([1, 2]))
    );
    let (status, body) = http
        .post("/subjects/fills-value", json!({"schema": TRADE_REQUIRED}))
        .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(40403))
    );

    // Checking against an explicit version and against "all versions".
    let (status, body) = http
        .post(
            "/compatibility/subjects/fills-value/versions/1",
            json!({"schema": TRADE_V2}),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    let (status, body) = http
        .post(
            "/compatibility/subjects/fills-value/versions",
            json!({"schema": TRADE_RETYPED}),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": false}))
    );
    let (status, body) = http
        .post(
            "/compatibility/subjects/nobody-value/versions",
            json!({"schema": TRADE_RETYPED}),
        )
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": true}))
    );

    server.stop().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn compatibility_config_global_and_per_subject() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);

    assert_eq!(
        http.get("/config").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );
    let (status, body) = http.get("/config/quotes-value").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(40408))
    );
    assert_eq!(
        http.get("/config/quotes-value?defaultToGlobal=true")
            .await?,
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );

    // A subject-level setting overrides the global one, before or after the first version.
    assert_eq!(
        http.put("/config/quotes-value", json!({"compatibility": "NONE"}))
            .await?,
        (StatusCode::OK, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        http.get("/config/quotes-value").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "NONE"}))
    );
    http.register("quotes-value", TRADE_V2).await?;
    http.register("quotes-value", TRADE_RETYPED).await?;
    assert_eq!(
        http.get("/subjects/quotes-value/versions").await?,
        (StatusCode::OK, json!([1, 2]))
    );

    // FORWARD globally: dropping a required field is refused for subjects without their own level.
    assert_eq!(
        http.put("/config", json!({"compatibility": "forward"}))
            .await?,
        (StatusCode::OK, json!({"compatibility": "FORWARD"}))
    );
    assert_eq!(
        http.get("/config").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "FORWARD"}))
    );
    http.register("books-value", TRADE_V2).await?;
    let dropped = r#"{"type":"record","name":"Trade","namespace":"tradestream.test",
        "fields":[{"name":"symbol","type":"string"}]}"#;
    let (status, body) = http
        .post("/subjects/books-value/versions", json!({"schema": dropped}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("FORWARD") && m.contains("qty")),
        "{body}"
    );
    // The subject-level NONE still wins over the global FORWARD.
    http.register("quotes-value", dropped).await?;

    // Removing the subject level falls back to the global one.
    assert_eq!(
        http.delete("/config/quotes-value").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "NONE"}))
    );
    let (status, body) = http.delete("/config/quotes-value").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(40408))
    );
    assert_eq!(
        http.get("/config/quotes-value?defaultToGlobal=true")
            .await?,
        (StatusCode::OK, json!({"compatibilityLevel": "FORWARD"}))
    );

    let (status, body) = http
        .put("/config", json!({"compatibility": "SIDEWAYS"}))
        .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(42203))
    );
    assert_eq!(
        http.delete("/config").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "FORWARD"}))
    );
    assert_eq!(
        http.get("/config").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );

    server.stop().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn ids_survive_a_restart_and_are_shared_across_subjects() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);
    let id_a = http.register("alpha-value", TRADE_V1).await?;
    let id_b = http.register("beta-value", TRADE_V1).await?;
    assert_eq!(id_a, id_b, "one global id per distinct schema");
    let id_v2 = http.register("alpha-value", TRADE_V2).await?;
    http.put("/config/beta-value", json!({"compatibility": "FULL"}))
        .await?;
    let (status, subjects) = http.get(&format!("/schemas/ids/{id_a}/subjects")).await?;
    assert_eq!(
        (status, subjects),
        (StatusCode::OK, json!(["alpha-value", "beta-value"]))
    );
    server.stop().await?;

    // A new server (new router, same database) answers the same.
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);
    assert_eq!(
        http.get(&format!("/schemas/ids/{id_v2}")).await?,
        (StatusCode::OK, json!({"schema": TRADE_V2}))
    );
    assert_eq!(http.register("beta-value", TRADE_V1).await?, id_a);
    assert_eq!(http.register("beta-value", TRADE_V2).await?, id_v2);
    assert_eq!(
        http.get("/subjects/beta-value/versions").await?,
        (StatusCode::OK, json!([1, 2]))
    );
    assert_eq!(
        http.get("/config/beta-value").await?,
        (StatusCode::OK, json!({"compatibilityLevel": "FULL"}))
    );
    let id_new = http.register("gamma-value", r#""string""#).await?;
    assert!(
        id_new > id_v2,
        "ids keep increasing after a restart: {id_new} vs {id_v2}"
    );

    // Concurrent registrations of one new schema under many subjects give one id.
    let schema = r#"{"type":"record","name":"Race","fields":[{"name":"n","type":"int"}]}"#;
    let registrations = (0..8).map(|i| {
        let http = Http::new(&server.url);
        async move { http.register(&format!("race-{}", i % 3), schema).await }
    });
    let ids = futures::future::try_join_all(registrations).await?;
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    for i in 0..3 {
        assert_eq!(
            http.get(&format!("/subjects/race-{i}/versions")).await?,
            (StatusCode::OK, json!([1]))
        );
    }

    server.stop().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn unknown_things_and_deletes_give_confluent_errors() -> Result<()> {
    let db = TestDatabase::new().await?;
    let server = Server::start(db.pool().clone()).await?;
    let http = Http::new(&server.url);

    let expect = |(status, body): (StatusCode, Value), want_status: StatusCode, code: i64| {
        assert_eq!(
            (status, error_code(&body)),
            (want_status, Some(code)),
            "{body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    };
    let body = expect(
        http.get("/subjects/ghost-value/versions").await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(body["message"], json!("Subject 'ghost-value' not found."));
    expect(
        http.get("/subjects/ghost-value/versions/latest").await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    expect(
        http.post("/subjects/ghost-value", json!({"schema": TRADE_V1}))
            .await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    let body = expect(
        http.get("/schemas/ids/4242").await?,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_eq!(body["message"], json!("Schema 4242 not found"));
    expect(
        http.get("/schemas/ids/4242/versions").await?,
        StatusCode::NOT_FOUND,
        40403,
    );

    let id = http.register("prices-value", TRADE_V1).await?;
    expect(
        http.get("/subjects/prices-value/versions/7").await?,
        StatusCode::NOT_FOUND,
        40402,
    );
    expect(
        http.get("/subjects/prices-value/versions/seven").await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    expect(
        http.post(
            "/subjects/prices-value/versions",
            json!({"schema": "{\"type\": \"recor"}),
        )
        .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    expect(
        http.post(
            "/subjects/prices-value/versions",
            json!({"schema": "{}", "schemaType": "JSON"}),
        )
        .await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );

    // Soft delete hides the subject; its versions and the id stay readable on request.
    http.register("prices-value", TRADE_V2).await?;
    expect(
        http.delete("/subjects/prices-value?permanent=true").await?,
        StatusCode::NOT_FOUND,
        40405,
    );
    assert_eq!(
        http.delete("/subjects/prices-value").await?,
        (StatusCode::OK, json!([1, 2]))
    );
    expect(
        http.delete("/subjects/prices-value").await?,
        StatusCode::NOT_FOUND,
        40404,
    );
    expect(
        http.get("/subjects/prices-value/versions").await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(http.get("/subjects").await?, (StatusCode::OK, json!([])));
    assert_eq!(
        http.get("/subjects?deleted=true").await?,
        (StatusCode::OK, json!(["prices-value"]))
    );
    assert_eq!(
        http.get("/subjects/prices-value/versions?deleted=true")
            .await?,
        (StatusCode::OK, json!([1, 2]))
    );
    let (status, body) = http
        .get("/subjects/prices-value/versions/1?deleted=true")
        .await?;
    assert_eq!((status, body["id"].as_i64()), (StatusCode::OK, Some(id)));
    assert_eq!(
        http.get(&format!("/schemas/ids/{id}")).await?,
        (StatusCode::OK, json!({"schema": TRADE_V1}))
    );

    // Re-registering after a soft delete continues the numbering and keeps the id.
    assert_eq!(http.register("prices-value", TRADE_V1).await?, id);
    assert_eq!(
        http.get("/subjects/prices-value/versions").await?,
        (StatusCode::OK, json!([3]))
    );

    // Version deletes: soft first, then permanent.
    expect(
        http.delete("/subjects/prices-value/versions/3?permanent=true")
            .await?,
        StatusCode::NOT_FOUND,
        40407,
    );
    assert_eq!(
        http.delete("/subjects/prices-value/versions/latest")
            .await?,
        (StatusCode::OK, json!(3))
    );
    expect(
        http.delete("/subjects/prices-value/versions/3").await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(
        http.delete("/subjects/prices-value/versions/3?permanent=true")
            .await?,
        (StatusCode::OK, json!(3))
    );
    assert_eq!(
        http.delete("/subjects/prices-value?permanent=true").await?,
        (StatusCode::OK, json!([1, 2]))
    );
    expect(
        http.get("/subjects/prices-value/versions?deleted=true")
            .await?,
        StatusCode::NOT_FOUND,
        40401,
    );
    // Ids are permanent: a decoder holding an old record can still fetch its schema.
    assert_eq!(
        http.get(&format!("/schemas/ids/{id}")).await?,
        (StatusCode::OK, json!({"schema": TRADE_V1}))
    );
    // After a hard delete the subject starts again at version 1, with the same id.
    assert_eq!(http.register("prices-value", TRADE_V1).await?, id);
    assert_eq!(
        http.get("/subjects/prices-value/versions").await?,
        (StatusCode::OK, json!([1]))
    );

    expect(
        http.get("/no/such/route").await?,
        StatusCode::NOT_FOUND,
        404,
    );
    server.stop().await?;
    db.cleanup().await;
    Ok(())
}
