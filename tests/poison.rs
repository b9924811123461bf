//! Poison input, end to end: every processor (features, scorer, the trading core under the
//! generic runner; the sink under its Postgres runner) runs against a real mock broker, a real
//! schema registry and real Postgres while thousands of bad records are interleaved with the
//! good ones on every input topic — bytes that are not Avro, Confluent frames with unknown
//! schema ids, another topic's record, truncated bodies, tombstones, and schema-valid records
//! that break a rule (negative price, NaN, zero quantity, an unknown account...).
//!
//! Checked: each processor dead-letters exactly the bad records of each of its input topics to
//! `<topic>.dlq` (headers: source topic, partition, offset, error class, message, processor;
//! envelope: the original bytes), nothing good is dead-lettered, every good record is
//! processed (features for every bar, a Postgres row for every good record, committed offsets
//! at the end of every partition), the metric counts the dead letters, and every processor is
//! still running at the end and stops cleanly.

use anyhow::{Context, Result, bail};
use chrono::Utc;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::{Kafka, KafkaConfig, Metrics, MockKafka, RunnerConfig, run_processor};
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::{AccountId, Codec, Processor, Record, Topic, samples};

const PARTITIONS: i32 = 3;
/// Good bars per symbol (three symbols).
const BARS: u64 = 150;
/// Bad market-data records published after each good bar, on the same partitions.
const BAD_PER_GOOD_BAR: usize = 2;
/// Bad records injected on each other input topic.
const BAD_PER_TOPIC: usize = 250;

fn config() -> KafkaConfig {
    KafkaConfig {
        session_timeout_ms: 3_000,
        partitions: PARTITIONS,
        ..KafkaConfig::default()
    }
}

/// Encodes records of the topic's own schema without validating them: how a buggy or
/// malicious producer writes schema-valid but wrong data.
struct RawEncoder {
    encoder: AvroEncoder,
}

impl RawEncoder {
    fn new(registry: &str) -> Self {
        Self {
            encoder: AvroEncoder::new(
                SrSettings::new_builder(registry.to_string())
                    .no_proxy()
                    .build()
                    .unwrap_or_else(|e| panic!("registry settings: {e}")),
            ),
        }
    }

    async fn encode<R: Record + serde::Serialize>(&self, record: &R) -> Result<Vec<u8>> {
        let topic = R::TOPIC;
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.name().to_string(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, topic.schema().to_string()),
        );
        Ok(self.encoder.encode_struct(record, &strategy).await?)
    }
}

/// Schema-valid records that break a rule of `topic`, each with its kind.
async fn semantic_bad(raw: &RawEncoder, topic: Topic, i: usize) -> Result<Vec<u8>> {
    let nan = f64::NAN;
    Ok(match topic {
        Topic::MarketData => {
            let mut r = samples::market_data();
            r.record_id = format!("bad-md-{i}");
            match i % 4 {
                0 => {
                    r.open = Decimal::NEGATIVE_ONE;
                    r.low = Decimal::NEGATIVE_ONE;
                }
                1 => std::mem::swap(&mut r.high, &mut r.low),
                2 => r.volume = Decimal::new(-5, 0),
                _ => r.record_id.clear(),
            }
            raw.encode(&r).await?
        }
        Topic::Features => {
            let mut r = samples::features();
            r.record_id = format!("bad-features-{i}");
            match i % 3 {
                0 => r.close = Decimal::new(-1, 0),
                1 => {
                    r.values.insert("rsi_14", nan);
                }
                _ => {
                    r.values.insert("z_price", f64::INFINITY);
                }
            }
            raw.encode(&r).await?
        }
        Topic::TradingSignals => {
            let mut r = samples::trading_signal();
            r.signal_id = format!("bad-signal-{i}");
            match i % 3 {
                0 => r.confidence = 1.5,
                1 => r.confidence = nan,
                _ => r.reference_price = Decimal::ZERO,
            }
            raw.encode(&r).await?
        }
        Topic::Anomalies => {
            let mut r = samples::anomaly();
            r.anomaly_id = format!("bad-anomaly-{i}");
            r.score = if i.is_multiple_of(2) {
                nan
            } else {
                f64::NEG_INFINITY
            };
            raw.encode(&r).await?
        }
        Topic::Orders => {
            let mut r = samples::order();
            r.event_id = format!("bad-order-{i}:1");
            r.order_id = format!("bad-order-{i}");
            match i % 4 {
                0 => r.quantity = Decimal::ZERO,
                1 => r.limit_price = None,
                2 => r.limit_price = Some(Decimal::new(-5, 0)),
                _ => r.filled_quantity = r.quantity + Decimal::ONE,
            }
            raw.encode(&r).await?
        }
        Topic::Fills => {
            let mut r = samples::fill();
            r.fill_id = format!("bad-fill-{i}");
            match i % 4 {
                0 => r.quantity = Decimal::ZERO,
                1 => r.price = Decimal::new(-1, 0),
                2 => r.commission = Decimal::new(-1, 0),
                // Valid in every field, but nobody has this account.
                _ => r.account = AccountId::new("nobody")?,
            }
            raw.encode(&r).await?
        }
        #[allow(unreachable_patterns)]
        _ => b"no rule-breaking sample for this topic yet".to_vec(),
    })
}

/// The `i`-th bad record for `topic`: cycles through every kind of poison.
async fn bad_payload(
    codec: &Codec,
    raw: &RawEncoder,
    topic: Topic,
    i: usize,
) -> Result<Option<Vec<u8>>> {
    Ok(Some(match i % 6 {
        0 => format!("this is not avro #{i}").into_bytes(),
        1 => {
            // Confluent frame, schema id nobody registered.
            let id = 900_000u32 + (i % 7) as u32;
            let mut b = vec![0u8];
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(b"\x02\x04ab");
            b
        }
        2 => {
            // A valid record of another topic.
            if topic == Topic::Fills {
                codec.encode(&samples::market_data()).await?
            } else {
                codec.encode(&samples::fill()).await?
            }
        }
        3 => {
            // Right schema id, body cut short.
            let mut b = semantic_bad(raw, Topic::Features, 0).await?;
            if topic != Topic::Features {
                b = match topic {
                    Topic::MarketData => codec.encode(&samples::market_data()).await?,
                    Topic::TradingSignals => codec.encode(&samples::trading_signal()).await?,
                    Topic::Anomalies => codec.encode(&samples::anomaly()).await?,
                    Topic::Orders => codec.encode(&samples::order()).await?,
                    Topic::Fills => codec.encode(&samples::fill()).await?,
                    _ => b,
                };
            }
            b.truncate(8);
            b
        }
        4 => return Ok(None),
        _ => semantic_bad(raw, topic, i / 6).await?,
    }))
}

/// Enqueues a record (order per partition is kept by the idempotent producer); the future
/// yields where it landed.
fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
) -> Result<rdkafka::producer::DeliveryFuture> {
    let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
    if let Some(p) = payload {
        record = record.payload(p);
    }
    producer
        .send_result(record)
        .map_err(|(e, _)| e)
        .with_context(|| format!("producing to {topic}"))
}

async fn landed(delivery: rdkafka::producer::DeliveryFuture) -> Result<(i32, i64)> {
    let delivered = delivery
        .await
        .context("producer dropped")?
        .map_err(|(e, _)| e)?;
    Ok((delivered.partition, delivered.offset))
}

type Positions = BTreeMap<Topic, BTreeSet<(i32, i64)>>;

/// Low and high watermarks of every partition of `topic`.
async fn watermarks(kafka: &Kafka, topic: &str) -> Result<Vec<(i64, i64)>> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let topic = topic.to_string();
    // Dead-letter topics have one partition.
    let partitions = if topic.ends_with(".dlq") {
        1
    } else {
        PARTITIONS
    };
    tokio::task::spawn_blocking(move || {
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map_err(anyhow::Error::from)
            })
            .collect()
    })
    .await?
}

async fn total(kafka: &Kafka, topic: &str) -> Result<i64> {
    Ok(watermarks(kafka, topic).await?.iter().map(|(_, h)| h).sum())
}

/// Every message of a dead-letter topic (one partition), read from the beginning.
async fn read_dlq(kafka: &Kafka, topic: &str) -> Result<Vec<rdkafka::message::OwnedMessage>> {
    let expected = total(kafka, topic).await?;
    let consumer: BaseConsumer = kafka.base_consumer(&format!("poison-reader-{topic}"))?;
    // Assigned, not subscribed: no group join to wait for.
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < expected {
            if Instant::now() > deadline {
                bail!("read {} of {expected} dead letters", out.len());
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                out.push(m?.detach());
            }
        }
        Ok(out)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_record_is_dead_lettered_and_every_good_one_processed() -> Result<()> {
    let started = Instant::now();
    let db = TestDatabase::new().await?;
    let pool = db.pool().clone();
    let mock = Arc::new(MockKafka::start(1)?);
    let kafka = Kafka::with_mock(config(), mock);
    kafka
        .provision(&tradestream_kafka::standard_topics(kafka.config()))
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = format!("http://{}", listener.local_addr()?);
    let (registry_stop, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    let registry_task = tokio::spawn(tradestream_registry::serve(
        listener,
        tradestream_registry::RegistryState::new(pool.clone()),
        async {
            let _ = registry_stopped.await;
        },
    ));
    let codec = Codec::new(&registry)?;
    codec.register_all().await?;
    let raw = RawEncoder::new(&registry);

    let router_config = tradestream_router::RouterConfig::default();
    for (id, account) in &router_config.accounts {
        tradestream_postgres::portfolio::create_account(
            &pool,
            &tradestream_postgres::portfolio::NewAccount {
                account_id: id.clone(),
                name: id.to_string(),
                initial_capital: account.initial_capital,
                allow_short: account.allow_short,
                commission_per_share: account.commission_per_share,
                commission_bps: account.commission_bps,
                commission_min: account.commission_min,
            },
        )
        .await?;
    }

    // Every processor, each under its runner.
    let metrics = Metrics::new();
    let (stop, stopped) = watch::channel(false);
    let wait = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut inputs: BTreeMap<&'static str, Vec<Topic>> = BTreeMap::new();
    let mut runners = Vec::new();
    macro_rules! spawn_core {
        ($core:expr) => {{
            let mut core = $core;
            inputs.insert(core.name(), core.inputs().to_vec());
            let (kafka, codec, metrics, shutdown) = (
                kafka.clone(),
                codec.clone(),
                metrics.clone(),
                wait(stopped.clone()),
            );
            let mut runner = RunnerConfig::for_processor(core.name());
            runner.group_id = format!("poison-{}", core.name());
            let name = core.name();
            runners.push((
                name,
                tokio::spawn(async move {
                    run_processor(&kafka, &codec, &mut core, &runner, &metrics, shutdown).await
                }),
            ));
        }};
    }
    spawn_core!(tradestream_features::FeaturesProcessor::new(
        tradestream_features::FeaturesConfig::default()
    )?);
    let models = tradestream_scorer::ModelHandle::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models"
    )))?;
    spawn_core!(tradestream_scorer::Scorer::new(
        models,
        &tradestream_scorer::ScorerConfig::default()
    )?);
    spawn_core!(tradestream_trading::TradingCore::new(
        tradestream_trading::TradingConfig {
            router: router_config.clone(),
            exchange: tradestream_exchange::ExchangeConfig::default(),
        }
    )?);
    let sink_inputs: Vec<Topic> = tradestream_schemas::topics::stage_inputs("sink")
        .context("the sink's inputs")?
        .to_vec();
    inputs.insert(tradestream_sink::PROCESSOR, sink_inputs.clone());
    let mut sink = {
        let (kafka, codec, pool, metrics, shutdown) = (
            kafka.clone(),
            codec.clone(),
            pool.clone(),
            metrics.clone(),
            wait(stopped.clone()),
        );
        let config = tradestream_sink::SinkConfig {
            group_id: "poison-sink".into(),
            ..Default::default()
        };
        tokio::spawn(async move {
            tradestream_sink::run_sink(&kafka, &codec, pool, config, &metrics, shutdown).await
        })
    };
    let read_topics: BTreeSet<Topic> = inputs.values().flatten().copied().collect();

    // Market data: good bars with bad records between them, on the same partitions.
    let producer = kafka.producer()?;
    let mut bad: Positions = BTreeMap::new();
    let mut bad_payloads: BTreeMap<(Topic, i32, i64), Option<Vec<u8>>> = BTreeMap::new();
    let symbols = ["SYNA", "SYNB", "SYNC"];
    let mut feed = tradestream_ingest::SyntheticFeed::new(tradestream_ingest::SyntheticConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        seed: 11,
        bars_per_symbol: Some(BARS),
        ..Default::default()
    })?;
    let now = Utc::now();
    let mut good_bars = Vec::new();
    let mut n_bad = 0usize;
    let mut good_sends = Vec::new();
    let mut bad_sends = Vec::new();
    while let Some(bar) = feed.next_at(now) {
        let bytes = codec.encode(&bar).await?;
        good_sends.push(send(
            &producer,
            Topic::MarketData.name(),
            bar.key(),
            Some(&bytes),
        )?);
        good_bars.push(bar.record_id.clone());
        for _ in 0..BAD_PER_GOOD_BAR {
            let key = symbols[n_bad % symbols.len()];
            let payload = bad_payload(&codec, &raw, Topic::MarketData, n_bad).await?;
            let delivery = send(&producer, Topic::MarketData.name(), key, payload.as_deref())?;
            bad_sends.push((Topic::MarketData, payload, delivery));
            n_bad += 1;
        }
        // Poison on the downstream topics while their good records are being produced.
        if good_bars.len().is_multiple_of(2) {
            let i = good_bars.len() / 2;
            for topic in read_topics.iter().filter(|t| **t != Topic::MarketData) {
                if i > BAD_PER_TOPIC {
                    break;
                }
                let key = match topic {
                    Topic::Orders | Topic::Fills => "demo",
                    _ => symbols[i % symbols.len()],
                };
                let payload = bad_payload(&codec, &raw, *topic, i).await?;
                let delivery = send(&producer, topic.name(), key, payload.as_deref())?;
                bad_sends.push((*topic, payload, delivery));
            }
        }
        // Let the pipeline work on earlier records while later ones are still coming.
        if good_bars.len().is_multiple_of(50) {
            for d in std::mem::take(&mut good_sends) {
                landed(d).await?;
            }
            for (topic, payload, d) in std::mem::take(&mut bad_sends) {
                let at = landed(d).await?;
                bad.entry(topic).or_default().insert(at);
                bad_payloads.insert((topic, at.0, at.1), payload);
            }
        }
    }
    for d in good_sends {
        landed(d).await?;
    }
    for (topic, payload, d) in bad_sends {
        let at = landed(d).await?;
        bad.entry(topic).or_default().insert(at);
        bad_payloads.insert((topic, at.0, at.1), payload);
    }
    let published = Instant::now();

    // Wait until every consumer has committed the end of every partition it reads, and the
    // pipeline has gone quiet.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut quiet = 0;
    let mut last_totals = Vec::new();
    loop {
        if Instant::now() > deadline {
            bail!("the pipeline did not drain within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, handle) in &runners {
            if handle.is_finished() {
                bail!("{name} stopped while consuming poison (see its error in the log)");
            }
        }
        if sink.is_finished() {
            let result = (&mut sink).await?;
            bail!("the sink stopped while consuming poison: {result:?}");
        }
        let mut done = true;
        let mut totals = Vec::new();
        for topic in &read_topics {
            let marks = watermarks(&kafka, topic.name()).await?;
            totals.push(marks.iter().map(|(_, h)| *h).sum::<i64>());
            for (name, topics) in &inputs {
                if !topics.contains(topic) {
                    continue;
                }
                let committed: Vec<Option<i64>> = if *name == tradestream_sink::PROCESSOR {
                    let rows: Vec<(i32, i64)> = sqlx::query_as(
                        "SELECT partition, next_offset FROM consumed_offsets WHERE consumer_group = $1 AND topic = $2",
                    )
                    .bind("poison-sink")
                    .bind(topic.name())
                    .fetch_all(&pool)
                    .await?;
                    (0..PARTITIONS)
                        .map(|p| rows.iter().find(|r| r.0 == p).map(|r| r.1))
                        .collect()
                } else {
                    tradestream_kafka::committed_offsets(
                        &kafka,
                        &format!("poison-{name}"),
                        topic.name(),
                        PARTITIONS,
                    )
                    .await?
                };
                for (p, (_, high)) in marks.iter().enumerate() {
                    if *high > 0 && committed[p].unwrap_or(0) < *high {
                        done = false;
                    }
                }
            }
        }
        if done && totals == last_totals {
            quiet += 1;
            if quiet >= 2 {
                break;
            }
        } else {
            quiet = 0;
        }
        last_totals = totals;
    }
    let drained = Instant::now();

    // Dead letters: exactly the bad records, once per processor reading the topic.
    let mut dead_total = 0usize;
    for topic in &read_topics {
        let dlq = topic.dlq();
        let messages = read_dlq(&kafka, &dlq).await?;
        let mut seen: BTreeMap<String, BTreeSet<(i32, i64)>> = BTreeMap::new();
        for m in &messages {
            let headers = m.headers().context("dead letter without headers")?;
            let info = DeadLetterInfo::from_headers(headers)
                .with_context(|| format!("{dlq}: incomplete dead-letter headers"))?;
            assert_eq!(info.topic, topic.name(), "{dlq}: source topic header");
            assert_eq!(info.error_class, "dead_letter", "{dlq}: {info:?}");
            assert!(!info.message.is_empty(), "{dlq}: empty reason");
            let envelope = codec
                .decode_dead_letter(m.payload().context("dead letter without value")?)
                .await?;
            assert_eq!(envelope.source_offset, info.offset);
            assert_eq!(envelope.source_partition, info.partition);
            let original = bad_payloads
                .get(&(*topic, info.partition, info.offset))
                .with_context(|| {
                    format!(
                        "{} dead-lettered a good record: {dlq} {}:{}: {}",
                        info.processor, info.partition, info.offset, info.message
                    )
                })?;
            assert_eq!(&envelope.payload, original, "{dlq}: original bytes kept");
            assert!(
                seen.entry(info.processor.clone())
                    .or_default()
                    .insert((info.partition, info.offset)),
                "{dlq}: {} dead-lettered {}:{} twice",
                info.processor,
                info.partition,
                info.offset
            );
        }
        let expected = bad.get(topic).cloned().unwrap_or_default();
        assert!(!expected.is_empty(), "{topic}: the test injected no poison");
        for (name, topics) in &inputs {
            let got = seen.remove(*name).unwrap_or_default();
            if topics.contains(topic) {
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "{name} on {topic}: dead letters vs injected bad records"
                );
                assert_eq!(got, expected, "{name} on {topic}");
                dead_total += got.len();
            } else {
                assert!(got.is_empty(), "{name} does not read {topic}");
            }
        }
        assert!(seen.is_empty(), "{dlq}: unexpected processors {seen:?}");
    }

    // Good records processed: a features record per bar, a row per good record.
    let features_total = total(&kafka, Topic::Features.name()).await?;
    let bad_count = |t: Topic| bad.get(&t).map_or(0, |s| s.len()) as i64;
    assert_eq!(
        features_total - bad_count(Topic::Features),
        good_bars.len() as i64,
        "one features record per good bar"
    );
    for (topic, table) in [
        (Topic::MarketData, "market_data"),
        (Topic::Features, "features"),
        (Topic::TradingSignals, "signals"),
        (Topic::Anomalies, "anomalies"),
        (Topic::Orders, "order_events"),
        (Topic::Fills, "fills"),
    ] {
        let good = total(&kafka, topic.name()).await? - bad_count(topic);
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await?;
        assert_eq!(rows, good, "{topic}: Postgres rows vs good records");
    }
    let signals =
        total(&kafka, Topic::TradingSignals.name()).await? - bad_count(Topic::TradingSignals);
    let orders = total(&kafka, Topic::Orders.name()).await? - bad_count(Topic::Orders);
    assert!(
        signals > 0 && orders > 0,
        "signals {signals}, orders {orders}"
    );

    // The metric counts them, per processor and topic.
    let text = metrics.render();
    for (name, topics) in &inputs {
        for topic in topics {
            let line = format!(
                "tradestream_records_dead_lettered_total{{class=\"dead_letter\",processor=\"{name}\",topic=\"{topic}\"}} {}",
                bad_count(*topic)
            );
            assert!(text.contains(&line), "missing {line}");
        }
    }

    // Still running; each stops cleanly and reports the same counts.
    stop.send(true)?;
    for (name, handle) in runners {
        let stats = handle.await??;
        let expected: i64 = inputs[name].iter().map(|t| bad_count(*t)).sum();
        assert_eq!(stats.dead_lettered as i64, expected, "{name}: run stats");
    }
    let stats = sink.await??;
    assert_eq!(
        stats.dead_letters as i64,
        sink_inputs.iter().map(|t| bad_count(*t)).sum::<i64>(),
        "sink: run stats"
    );
    let _ = registry_stop.send(());
    registry_task.await??;
    let injected: usize = bad.values().map(BTreeSet::len).sum();
    println!(
        "poison: {} good bars, {injected} bad records injected on {} topics, {dead_total} dead letters checked; \
         published in {:.1} s, drained in {:.1} s more, {:.1} s in all",
        good_bars.len(),
        read_topics.len(),
        (published - started).as_secs_f64(),
        (drained - published).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    db.cleanup().await;
    Ok(())
}
