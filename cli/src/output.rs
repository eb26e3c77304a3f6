//! How commands talk to the user: tables on a terminal, JSON with `--json`, progress bars on
//! stderr only when it is a terminal (and never with `--json`); and the pieces several
//! commands' reports share, so that the same thing reads the same in every command.

use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use flowstate_api::{FileRef, KeyGroupRange, KeyedStateHandle};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// An inclusive range of key groups, `[start, end]`, in JSON: `{"start": 0, "end": 63}`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupSpan {
    /// First key group.
    pub start: u32,
    /// Last key group (inclusive).
    pub end: u32,
}

impl From<KeyGroupRange> for KeyGroupSpan {
    fn from(range: KeyGroupRange) -> Self {
        Self {
            start: range.start().get(),
            end: range.end().get(),
        }
    }
}

impl fmt::Display for KeyGroupSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// A file of a checkpoint, in JSON: its path relative to the storage root and its size.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file's path, relative to the storage root.
    pub path: String,
    /// The file's size, in bytes.
    pub bytes: u64,
}

impl From<&FileRef> for FileReport {
    fn from(file: &FileRef) -> Self {
        Self {
            path: file.path.clone(),
            bytes: file.size,
        }
    }
}

/// A keyed state handle's kind as reports name it: `canonical`, `changelog` or `native`, and
/// the backend of a native one (`rocksdb`).
pub fn handle_kind(handle: &KeyedStateHandle) -> (&'static str, Option<&str>) {
    match handle {
        KeyedStateHandle::Canonical { .. } => ("canonical", None),
        KeyedStateHandle::Changelog { .. } => ("changelog", None),
        KeyedStateHandle::Native { backend, .. } => ("native", Some(backend.as_str())),
        _ => ("other", None),
    }
}

/// The kind in one word or two, for people: `canonical`, `changelog`, `native rocksdb`.
pub fn handle_label(handle: &KeyedStateHandle) -> String {
    match handle_kind(handle) {
        (kind, None) => kind.to_string(),
        (kind, Some(backend)) => format!("{kind} {backend}"),
    }
}

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

/// `1 row`, `2 rows`: any count (`u32`, `u64`, `usize`).
pub fn plural<N: fmt::Display + PartialEq + From<u8>>(n: N, what: &str) -> String {
    let s = if n == N::from(1) { "" } else { "s" };
    format!("{n} {what}{s}")
}

/// A table with a header row (see [`aligned`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let all: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().cloned())
        .collect();
    aligned(&all, "")
}

/// Rows as lines after `indent`, every column but a row's last padded to its widest cell,
/// columns two spaces apart: the last column is free text of any length.
pub fn aligned(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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
    fn tables_align_every_column_but_the_last() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "1".into(), "free text".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB  C\nxxx  1   free text\ny    22\n");
        assert_eq!(aligned(&[vec!["a".into(), "b".into()]], "  "), "  a  b\n");
    }

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(plural(1u64, "row"), "1 row");
        assert_eq!(plural(0usize, "problem"), "0 problems");
        assert_eq!(plural(3u32, "subtask"), "3 subtasks");
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
