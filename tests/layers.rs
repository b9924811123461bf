//! The layering the tree promises (docs/architecture.md): the contracts crate holds no server
//! and no database driver, and the pure cores link no I/O (no Kafka client, no database
//! driver, no web server), checked on the real dependency graph with `cargo tree`.

use std::process::Command;

/// The normal (non-dev) dependency names of `package`.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cargo tree -p {package}: {e}"));
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

const IO: [&str; 5] = [
    "sqlx",
    "rdkafka",
    "rdkafka-sys",
    "axum",
    "tradestream-kafka",
];

#[test]
fn contracts_and_pure_cores_link_no_io() {
    // The scorer is not listed yet: its CSV training reads through ingest, which links the
    // Kafka client (the re-layer issue moves that reader).
    for package in [
        "tradestream-schemas",
        "tradestream-features",
        "tradestream-router",
        "tradestream-exchange",
        "tradestream-trading",
    ] {
        let deps = dependencies(package);
        let found: Vec<&str> = IO
            .iter()
            .copied()
            .filter(|io| deps.iter().any(|d| d == io))
            .collect();
        assert!(found.is_empty(), "{package} depends on {found:?}");
    }
    // And the check can see a violation: the registry does link a server and a driver.
    let registry = dependencies("tradestream-registry");
    assert!(registry.iter().any(|d| d == "sqlx") && registry.iter().any(|d| d == "axum"));
}
