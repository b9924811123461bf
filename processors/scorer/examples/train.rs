//! Trains the default models and writes them, printing the held-out report:
//! `cargo run -p tradestream-scorer --release --example train -- ../shared/data/nasdaq-daily.csv ^IXIC models`
//! (the `tradestream train` subcommand calls the same `train_from_csv`).

use std::path::PathBuf;
use tradestream_scorer::{TrainConfig, train_from_csv};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "../shared/data/nasdaq-daily.csv".into()),
    );
    let symbol = args.next().unwrap_or_else(|| "^IXIC".into());
    let out = PathBuf::from(args.next().unwrap_or_else(|| "models".into()));
    let report = train_from_csv(&data, &symbol, &out, &TrainConfig::default())?;
    print!("{report}");
    Ok(())
}
