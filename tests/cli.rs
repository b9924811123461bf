//! The binary itself: help text, config errors that name the setting, and the standalone
//! broker that several processes share.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tradestream_kafka::{Kafka, KafkaConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tradestream"))
}

#[test]
fn help_lists_the_subcommands() -> Result<()> {
    let out = bin().arg("--help").output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    for sub in [
        "demo", "broker", "registry", "postgres", "migrate", "topics", "schemas", "health",
    ] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
    Ok(())
}

#[test]
fn bad_settings_are_named() -> Result<()> {
    let out = bin()
        .args(["topics", "list", "--kafka-brokers", "not-a-host-port"])
        .env_remove("KAFKA_BROKERS")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("KAFKA_BROKERS"), "{err}");
    Ok(())
}

#[test]
fn schemas_show_prints_the_avsc() -> Result<()> {
    let out = bin().args(["schemas", "show", "fills"]).output()?;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["name"], "Fill");
    Ok(())
}

#[tokio::test]
async fn standalone_broker_serves_other_processes() -> Result<()> {
    let mut child = bin()
        .args(["broker", "--port", "0", "--partitions", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let bootstrap = line
        .trim()
        .strip_prefix("bootstrap: ")
        .context("bootstrap line")?
        .to_string();
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(bootstrap),
        ..KafkaConfig::default()
    })?;
    let health = kafka.health(Duration::from_secs(10)).await?;
    let partitions = |n: &str| health.topics.iter().find(|(t, _)| t == n).map(|(_, p)| *p);
    assert_eq!(partitions("market_data"), Some(3), "{health:?}");
    assert_eq!(partitions("fills.dlq"), Some(1), "{health:?}");
    // Topic provisioning against it reports the existing topics instead of failing.
    let provisioned = kafka
        .provision(&tradestream_kafka::standard_topics(kafka.config()))
        .await?;
    assert!(
        provisioned
            .iter()
            .all(|(_, p)| *p == tradestream_kafka::Provisioned::Existed),
        "{provisioned:?}"
    );
    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let status = child.wait()?;
    assert!(status.success(), "{status}");
    Ok(())
}
