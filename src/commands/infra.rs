//! The infrastructure subcommands: broker, registry, postgres, migrate, topics, schemas,
//! health.

use crate::args::{
    BrokerArgs, HealthArgs, MigrateArgs, PostgresArgs, RegistryArgs, SchemasAction, SchemasArgs,
    TopicsAction, TopicsArgs,
};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tradestream_kafka::{Kafka, MockKafka, standard_topics};
use tradestream_postgres::{Database, EmbeddedPostgres};
use tradestream_registry::{RegistryState, serve};
use tradestream_schemas::{Codec, Topic};

pub(crate) async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let config = tradestream_kafka::KafkaConfig {
        partitions: args.partitions,
        mock_partition_max_mb: args.mock_partition_max_mb,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|p| anyhow::anyhow!("invalid Kafka settings:\n  {}", p.join("\n  ")))?;
    let mock = Arc::new(MockKafka::start_keeping(
        args.brokers,
        config.mock_partition_max_mb,
    )?);
    let kafka = Kafka::with_mock(config, mock.clone());
    let mut specs = standard_topics(kafka.config());
    // The mock has no CreateTopics: the stateful processors' changelogs for the default
    // groups are created here (others with --topic NAME.changelog:1).
    for stage in ["features", "trading"] {
        specs.push(tradestream_kafka::TopicSpec {
            name: tradestream_kafka::changelog::changelog_topic(&format!("tradestream-{stage}")),
            partitions: 1,
            retention_ms: -1,
        });
    }
    for t in &args.topics {
        let (name, partitions) = match t.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse()
                    .with_context(|| format!("--topic {t:?}: partitions must be a number"))?,
            ),
            None => (t.as_str(), args.partitions),
        };
        // A --topic naming a standard topic sets its partition count instead of adding it twice.
        specs.retain(|s| s.name != name);
        specs.push(tradestream_kafka::TopicSpec {
            name: name.into(),
            partitions,
            retention_ms: -1,
        });
    }
    kafka.provision(&specs).await?;
    let listener = tradestream_kafka::mock::bind_broker(args.port).await?;
    let address = listener.local_addr()?;
    let shutdown = super::Shutdown::listen();
    // Scripts read this line to find the broker.
    println!("bootstrap: {address}");
    tracing::info!(%address, mock = mock.bootstrap(), topics = specs.len(), "broker serving");
    let target = tradestream_kafka::mock::first_bootstrap(mock.bootstrap());
    let reachability = tradestream_kafka::mock::Reachability::new();
    let drills = super::outage_drills(mock.clone(), reachability.clone());
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    shutdown
        .run_with_grace("broker", grace, || "the mock cluster".into(), async {
            tradestream_kafka::mock::forward_with(
                listener,
                target,
                reachability,
                shutdown.requested(),
            )
            .await?;
            drills.abort();
            Ok(())
        })
        .await?;
    tracing::info!("broker stopped");
    Ok(())
}

pub(crate) async fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    let db = Database::connect(&args.pg.config()?).await?;
    db.migrate().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("TRADESTREAM_REGISTRY_LISTEN / --listen {}", args.listen))?;
    let shutdown = super::Shutdown::listen();
    println!("schema registry: http://{}", listener.local_addr()?);
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    shutdown
        .run_with_grace(
            "registry",
            grace,
            || "in-flight registry requests or the Postgres pool".into(),
            async {
                let result = serve(
                    listener,
                    RegistryState::new(db.pool().clone()),
                    shutdown.requested(),
                )
                .await;
                db.shutdown().await?;
                Ok(result?)
            },
        )
        .await
}

pub(crate) async fn postgres(args: PostgresArgs) -> anyhow::Result<()> {
    let mut cfg = args.pg.config()?;
    cfg.database_url = None;
    let start_cfg = cfg.clone();
    // initdb and pg_ctl block: keep them off the async workers.
    let embedded =
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&start_cfg)).await??;
    if args.migrate {
        let db = Database::connect(&tradestream_postgres::PostgresConfig {
            database_url: Some(embedded.url()),
            ..cfg.clone()
        })
        .await?;
        db.migrate().await?;
        db.shutdown().await?;
    }
    // Scripts read this line to find the database.
    let shutdown = super::Shutdown::listen();
    println!("database_url: {}", embedded.url());
    shutdown.requested().await;
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    shutdown
        .run_with_grace(
            "postgres",
            grace,
            || "pg_ctl stop (the server finishing its sessions)".into(),
            async { Ok(tokio::task::spawn_blocking(move || embedded.stop()).await??) },
        )
        .await
}

pub(crate) async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let db = Database::connect(&args.pg.config()?).await?;
    db.migrate().await?;
    println!("migrations applied to {}", db.url());
    db.shutdown().await?;
    Ok(())
}

pub(crate) async fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    match args.action {
        TopicsAction::Create(a) => {
            let kafka = Kafka::connect(a.kafka.config()?)?;
            for (name, outcome) in kafka.provision(&standard_topics(kafka.config())).await? {
                println!("{name}: {outcome:?}");
            }
        }
        TopicsAction::List(a) => {
            let kafka = Kafka::connect(a.kafka.config()?)?;
            let health = kafka.health(Duration::from_secs(10)).await?;
            for (name, partitions) in health.topics {
                println!("{name}\t{partitions}");
            }
        }
    }
    Ok(())
}

pub(crate) async fn schemas(args: SchemasArgs) -> anyhow::Result<()> {
    match args.action {
        SchemasAction::Register {
            schema_registry_url,
        } => {
            let codec = Codec::new(&schema_registry_url)?;
            for (subject, id) in codec.register_all().await? {
                println!("{subject}\t{id}");
            }
        }
        SchemasAction::Show { topic } => {
            let text = match topic.as_str() {
                "dead_letter" => tradestream_schemas::topics::DEAD_LETTER_SCHEMA,
                name => Topic::from_name(name)
                    .map(Topic::schema)
                    .with_context(|| format!("unknown topic {name:?}"))?,
            };
            print!("{text}");
        }
    }
    Ok(())
}

pub(crate) async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut failures = Vec::new();
    let kafka_cfg = args.kafka.config()?;
    if kafka_cfg.brokers.is_none() {
        println!("kafka: KAFKA_BROKERS unset (embedded mock cluster would be used)");
    } else {
        match Kafka::connect(kafka_cfg)?.health(timeout).await {
            Ok(h) => println!(
                "kafka: ok ({} brokers, {} topics at {})",
                h.brokers,
                h.topics.len(),
                h.bootstrap
            ),
            Err(e) => failures.push(format!("kafka: {e}")),
        }
    }
    let pg_cfg = args.pg.config()?;
    if pg_cfg.database_url.is_none() {
        println!("postgres: DATABASE_URL unset (a private cluster would be started)");
    } else {
        match tokio::time::timeout(timeout, Database::connect(&pg_cfg)).await {
            Ok(Ok(db)) => {
                println!("postgres: ok");
                db.shutdown().await?;
            }
            Ok(Err(e)) => failures.push(format!("postgres: {e}")),
            Err(_) => failures.push("postgres: timed out".into()),
        }
    }
    match args.registry.schema_registry_url {
        None => println!("schema registry: SCHEMA_REGISTRY_URL unset (tradestream serves its own)"),
        Some(url) => {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .no_proxy()
                .build()?;
            match client
                .get(format!("{}/subjects", url.trim_end_matches('/')))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => println!("schema registry: ok ({url})"),
                Ok(r) => failures.push(format!("schema registry: {url} answered {}", r.status())),
                Err(e) => failures.push(format!("schema registry: {url}: {e}")),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("unhealthy:\n  {}", failures.join("\n  "))
    }
}
