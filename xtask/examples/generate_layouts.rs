//! Prints generated layouts (layout::generator) as one JSON object,
//! name → layout, for record-generated.sh:
//!
//!   cargo run -q -p xtask --example generate_layouts -- SEED FIRST COUNT

use anyhow::{Context as _, Result};
use layout::generator;
use serde_json::{Map, Value};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, first, count] = args.as_slice() else {
        anyhow::bail!("usage: generate_layouts SEED FIRST COUNT");
    };
    let seed: u64 = seed.parse().context("SEED is a number")?;
    let first: u64 = first.parse().context("FIRST is a number")?;
    let count: u64 = count.parse().context("COUNT is a number")?;
    let layouts: Map<String, Value> = (first..first + count)
        .map(|index| (format!("g{seed}-{index}"), generator::layout(seed, index)))
        .collect();
    println!("{}", serde_json::to_string(&layouts)?);
    Ok(())
}
