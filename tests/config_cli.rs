//! `tradestream config`: the processor settings from the file, `TRADESTREAM__*` variables and
//! `--set` flags, as the binary resolves them for `run`, `up` and `demo`.

use anyhow::Result;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradestream"));
    // The caller's own overrides must not leak into these runs.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TRADESTREAM_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn stdout(out: &Output) -> Result<String> {
    anyhow::ensure!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout.clone())?)
}

#[test]
fn show_applies_file_then_env_then_flags() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        "[features]\nfeature_set_version = \"fs-custom\"\nrsi_period = 10\natr_period = 10\n\
         [router]\ndefault_account = \"paper\"\n\
         [router.accounts.paper]\ninitial_capital = 50000\n",
    )?;
    let out = bin()
        .args(["config", "show", "--config"])
        .arg(&file)
        .args([
            "--set",
            "features.rsi_period=30",
            "--set",
            "router.accounts.paper.limits.max_open_orders=50",
            "--set",
            "router.accounts.Desk.initial_capital=2500.50",
        ])
        .env("TRADESTREAM__FEATURES__RSI_PERIOD", "21")
        .env("TRADESTREAM__FEATURES__ATR_PERIOD", "21")
        .env("TRADESTREAM__ROUTER__ACCOUNTS__PAPER__ALLOW_SHORT", "true")
        .output()?;
    let text = stdout(&out)?;
    let shown: toml::Table = toml::from_str(&text)?;
    let features = &shown["features"];
    assert_eq!(features["feature_set_version"].as_str(), Some("fs-custom"));
    assert_eq!(features["rsi_period"].as_integer(), Some(30), "--set wins");
    assert_eq!(
        features["atr_period"].as_integer(),
        Some(21),
        "env beats file"
    );
    assert_eq!(
        features["macd_slow"].as_integer(),
        Some(26),
        "defaults fill in"
    );
    let paper = &shown["router"]["accounts"]["paper"];
    assert_eq!(paper["initial_capital"].as_str(), Some("50000"));
    assert_eq!(paper["allow_short"].as_bool(), Some(true));
    assert_eq!(paper["limits"]["max_open_orders"].as_integer(), Some(50));
    // A --set account joins the file's accounts (which replaced the default one), under
    // the key as written.
    let accounts: Vec<&String> = shown["router"]["accounts"]
        .as_table()
        .map(|t| t.keys().collect())
        .unwrap_or_default();
    assert_eq!(accounts, ["Desk", "paper"]);
    assert_eq!(
        shown["router"]["accounts"]["Desk"]["initial_capital"].as_str(),
        Some("2500.5")
    );
    // The output is a valid --config file that gives the same settings.
    let again = dir.path().join("shown.toml");
    std::fs::write(&again, &text)?;
    let out = bin()
        .args(["config", "show", "--config"])
        .arg(&again)
        .output()?;
    assert_eq!(stdout(&out)?, text);
    // `allow_short` accounts are margin accounts at the venue as well.
    let short = shown["exchange"]["short_accounts"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>());
    assert_eq!(short, Some(vec!["paper"]));
    Ok(())
}

#[test]
fn unknown_and_invalid_settings_name_setting_and_source() -> Result<()> {
    let out = bin()
        .args(["config", "show", "--set", "features.rsi_perod=21"])
        .env("TRADESTREAM__ROUTER__BRACKETS", "maybe")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    for needle in [
        "--set features.rsi_perod=21: setting `features.rsi_perod`: unknown field `rsi_perod`",
        "environment variable TRADESTREAM__ROUTER__BRACKETS: setting `router.brackets`",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }

    let out = bin()
        .args(["config", "show", "--set", "scorer.buy_threshold=2"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("scorer.buy_threshold: must be within [0.5, 1], got 2")
            && err.contains("(set by --set scorer.buy_threshold=2)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn env_lists_every_setting_with_its_variable() -> Result<()> {
    let out = bin()
        .args([
            "config",
            "env",
            "--set",
            "router.accounts.paper.allow_short=true",
        ])
        .output()?;
    let text = stdout(&out)?;
    for (path, var) in [
        ("features.rsi_period", "TRADESTREAM__FEATURES__RSI_PERIOD"),
        ("scorer.model_dir", "TRADESTREAM__SCORER__MODEL_DIR"),
        (
            "router.accounts.paper.limits.max_open_orders",
            "TRADESTREAM__ROUTER__ACCOUNTS__PAPER__LIMITS__MAX_OPEN_ORDERS",
        ),
        (
            "router.accounts.demo.limits.daily_loss_limit",
            "TRADESTREAM__ROUTER__ACCOUNTS__DEMO__LIMITS__DAILY_LOSS_LIMIT",
        ),
        (
            "exchange.slippage_bps",
            "TRADESTREAM__EXCHANGE__SLIPPAGE_BPS",
        ),
        ("sink.batch_size", "TRADESTREAM__SINK__BATCH_SIZE"),
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} missing from:\n{text}"));
        assert!(line.contains(var), "{line}");
    }
    // Every listed variable really is an override: setting one to its listed value changes
    // nothing, and a wrong type is refused naming it.
    let out = bin()
        .args(["config", "show"])
        .env("TRADESTREAM__SINK__BATCH_SIZE", "not-a-number")
        .output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        !out.status.success() && err.contains("TRADESTREAM__SINK__BATCH_SIZE"),
        "{err}"
    );
    Ok(())
}

#[test]
fn run_up_and_demo_take_set() -> Result<()> {
    for sub in [&["run", "features"][..], &["up"], &["demo"]] {
        let out = bin().args(sub).arg("--help").output()?;
        let help = stdout(&out)?;
        assert!(help.contains("--set <PATH=VALUE>"), "{sub:?}:\n{help}");
    }
    // A bad override stops `run` before it connects to anything.
    let out = bin()
        .args(["run", "features", "--set", "features.rsi_period=0"])
        .args(["--kafka-brokers", "127.0.0.1:1"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("features.rsi_period: must be between"),
        "{err}"
    );
    Ok(())
}
