//! `flowstate key-group`: the key group of a key and the subtask owning it, computed exactly as
//! the engine routes a record: the key serialized by its codec, hashed into a key group
//! ([`KeyContext::for_key`]), the key group owned by subtask
//! [`operator_index_for_key_group`].

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flowstate_api::key_groups::{key_group_range_for_operator, operator_index_for_key_group};
use flowstate_api::{KeyContext, MaxParallelism, Parallelism, SerdeCodec};
use serde::Serialize;

use crate::output::{self, KeyGroupSpan};
use crate::resolve;

/// `flowstate key-group`'s arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate key-group user-42 --max-parallelism 128\n  flowstate key-group user-42 --max-parallelism 128 --parallelism 3\n  flowstate key-group 1234 --codec u64 --max-parallelism 128 --parallelism 4 --json\n  flowstate key-group 0x07757365722d3432 --codec hex --max-parallelism 128"
)]
pub struct KeyGroupArgs {
    /// The key, as text: a string (`--codec string`), a decimal number (`--codec u64`) or the
    /// key's serialized bytes in hexadecimal, `0x` optional (`--codec hex`). A key starting
    /// with `-` is taken as a key too.
    #[arg(allow_hyphen_values = true)]
    key: String,
    /// The job's max parallelism (number of key groups), 1..=32768.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32768))]
    max_parallelism: u32,
    /// The operator's parallelism, to name the subtask owning the key (1..=max parallelism).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32768))]
    parallelism: Option<u32>,
    /// How the key is serialized: `string` and `u64` as the engine's default codec
    /// (`SerdeCodec<String>` / `SerdeCodec<u64>`, postcard) encodes them; `hex` takes the raw
    /// serialized key bytes (for keys of any other type, e.g. copied from `inspect`).
    #[arg(long, value_enum, default_value_t = KeyCodec::String)]
    codec: KeyCodec,
    /// Print JSON (the fields of the report documented in `KeyGroupReport`).
    #[arg(long)]
    json: bool,
}

/// How the key argument becomes the key's bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyCodec {
    /// `SerdeCodec<String>`: the key is the text.
    String,
    /// `SerdeCodec<u64>`: the key is a decimal unsigned 64-bit number.
    U64,
    /// The key's serialized bytes, in hexadecimal.
    Hex,
}

impl KeyCodec {
    fn name(self) -> &'static str {
        match self {
            KeyCodec::String => "string",
            KeyCodec::U64 => "u64",
            KeyCodec::Hex => "hex",
        }
    }
}

/// The JSON output of `flowstate key-group --json`. Field names are stable.
#[derive(Serialize, Debug)]
pub struct KeyGroupReport {
    /// The key as given on the command line.
    pub key: String,
    /// `string`, `u64` or `hex`: how the key was serialized.
    pub codec: &'static str,
    /// The key's serialized bytes (what the engine hashes), lowercase hex without `0x`.
    pub key_bytes: String,
    /// The key group of the key, in `0..max_parallelism`.
    pub key_group: u32,
    /// The max parallelism (number of key groups) given.
    pub max_parallelism: u32,
    /// The parallelism given, if any.
    pub parallelism: Option<u32>,
    /// The subtask owning the key group at `parallelism` (present with `parallelism`).
    pub subtask: Option<u32>,
    /// The key groups that subtask owns, inclusive (present with `parallelism`).
    pub subtask_key_groups: Option<KeyGroupSpan>,
}

/// The key's serialized bytes as the engine would produce them, or a clear error.
fn key_bytes(key: &str, codec: KeyCodec, max: MaxParallelism) -> Result<KeyContext> {
    Ok(match codec {
        KeyCodec::String => {
            KeyContext::for_key(&SerdeCodec::<String>::new(), &key.to_string(), max)
                .context("encoding the key as a string")?
        }
        KeyCodec::U64 => {
            let value: u64 = key.trim().parse().map_err(|e| {
                anyhow::anyhow!(
                    "'{key}' is not a u64 key ({e}): give a decimal number in 0..={}, or use --codec string or --codec hex",
                    u64::MAX
                )
            })?;
            KeyContext::for_key(&SerdeCodec::<u64>::new(), &value, max)
                .context("encoding the key as a u64")?
        }
        KeyCodec::Hex => KeyContext::new(parse_hex(key)?, max),
    })
}

/// Hex digits (an optional `0x`, no separators) to bytes.
fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if let Some((position, bad)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!(
            "'{text}' is not hex: '{bad}' at position {} is not a hex digit (give the key's bytes as hex digits, e.g. 0x0775736572, or use --codec string / --codec u64)",
            position + text.len() - digits.len()
        );
    }
    if !digits.len().is_multiple_of(2) {
        bail!(
            "'{text}' is not hex: it has an odd number of digits ({}); every byte takes two",
            digits.len()
        );
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    for pair in digits.as_bytes().chunks_exact(2) {
        // Checked above: ASCII hex digits, so both conversions succeed.
        let pair = std::str::from_utf8(pair).context("hex digits")?;
        bytes.push(u8::from_str_radix(pair, 16).context("hex digits")?);
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `flowstate key-group`: prints where the key goes (as JSON with `--json`).
pub fn run(args: KeyGroupArgs) -> Result<()> {
    let max = MaxParallelism::new(args.max_parallelism)?;
    let parallelism = args
        .parallelism
        .map(|p| resolve::parallelism_within(p, max, &format!("--max-parallelism {max}")))
        .transpose()?;
    let context = key_bytes(&args.key, args.codec, max)?;
    let key_group = context.key_group();
    let (subtask, subtask_key_groups) = match parallelism {
        Some(p) => {
            let index = operator_index_for_key_group(max, p, key_group);
            let range = key_group_range_for_operator(max, p, index)?;
            (Some(index), Some(KeyGroupSpan::from(range)))
        }
        None => (None, None),
    };
    let report = KeyGroupReport {
        key: args.key.clone(),
        codec: args.codec.name(),
        key_bytes: hex(context.key()),
        key_group: key_group.get(),
        max_parallelism: max.get(),
        parallelism: parallelism.map(Parallelism::get),
        subtask,
        subtask_key_groups,
    };
    if args.json {
        return output::print_json(&report);
    }
    let shown = match args.codec {
        KeyCodec::String => format!("{:?}", report.key),
        _ => report.key.clone(),
    };
    println!(
        "key        {shown} ({}, {} bytes: {})",
        report.codec,
        context.key().len(),
        if report.key_bytes.is_empty() {
            "empty"
        } else {
            &report.key_bytes
        }
    );
    println!(
        "key group  {} (of 0..={} at max parallelism {})",
        report.key_group,
        max.get() - 1,
        max.get()
    );
    match (
        report.parallelism,
        report.subtask,
        report.subtask_key_groups,
    ) {
        (Some(p), Some(index), Some(range)) => {
            println!("subtask    {index} of {p} (owns key groups {range})")
        }
        _ => println!("subtask    give --parallelism P to see which subtask owns it"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_parsed_or_refused_clearly() {
        assert_eq!(parse_hex("0x00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(parse_hex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
        let odd = parse_hex("abc").unwrap_err().to_string();
        assert!(odd.contains("odd number"), "{odd}");
        let bad = parse_hex("0x12zz").unwrap_err().to_string();
        assert!(bad.contains("'z' at position 4"), "{bad}");
        let unicode = parse_hex("é1").unwrap_err().to_string();
        assert!(unicode.contains("position 0"), "{unicode}");
    }
}
