//! How commands talk to the user: tables on a terminal, JSON with `--json`, progress bars on
//! stderr only when it is a terminal (and never with `--json`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout (the `--json` output of every listing command).
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding the report as JSON")?;
    println!("{text}");
    Ok(())
}

/// A progress bar over `len` steps on stderr; hidden when stderr is not a terminal (piped,
/// in tests) or when the output is JSON, so nothing but the report reaches a pipe.
pub fn progress(len: u64, message: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The lines of an error and its causes, each cause once: a cause whose text its parent's
/// message already contains (errors that print their source inline) is not repeated.
pub fn error_lines(error: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if lines.iter().any(|line| line.contains(&text)) {
            continue;
        }
        lines.push(text);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_printed_once() {
        let inner = std::io::Error::other("connection refused");
        let outer = anyhow::Error::new(inner).context("storage error on 'x': connection refused");
        let outer = outer.context("listing checkpoints of s3://b/p");
        assert_eq!(
            error_lines(&outer),
            vec![
                "listing checkpoints of s3://b/p".to_string(),
                "storage error on 'x': connection refused".to_string(),
            ]
        );
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
