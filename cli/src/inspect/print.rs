//! `inspect`'s report for people.

use super::decode::show;
use super::{
    InspectReport, KeyGroupReport, OperatorEntryReport, OperatorStateReport, RowReport,
    SubtaskReport,
};
use crate::output::{aligned, human_bytes, plural};

/// Non-empty key groups listed per line.
const KEY_GROUPS_PER_LINE: usize = 4;

pub fn human(report: &InspectReport) {
    let others: Vec<String> = report.checkpoints.iter().map(|id| id.to_string()).collect();
    println!(
        "checkpoint {} of {}: parallelism {}, max parallelism {} (the storage holds checkpoint{} {})",
        report.checkpoint_id,
        report.storage,
        report.parallelism,
        report.max_parallelism,
        if others.len() == 1 { "" } else { "s" },
        others.join(", ")
    );
    let mut filters = Vec::new();
    if let Some(i) = report.subtask_filter {
        filters.push(format!("subtask {i}"));
    }
    if let Some(name) = &report.state_filter {
        filters.push(format!("state {name}"));
    }
    if let Some(kg) = report.key_group_filter {
        filters.push(format!("key group {kg}"));
    }
    if !filters.is_empty() {
        println!("showing only {}", filters.join(", "));
    }

    println!();
    if report.states.is_empty() {
        println!("keyed states: none");
    } else {
        println!("keyed states (rows and bytes of the key groups shown):");
        let mut rows = vec![[
            "name",
            "kind",
            "namespace",
            "value",
            "map key",
            "ttl",
            "rows",
            "bytes",
        ]
        .map(String::from)
        .to_vec()];
        for s in &report.states {
            rows.push(vec![
                s.name.clone(),
                s.kind.clone(),
                s.namespace_codec.clone(),
                s.value_codec.clone(),
                s.user_key_codec.clone().unwrap_or_else(|| "-".into()),
                s.ttl.clone().unwrap_or_else(|| "none".into()),
                s.rows.to_string(),
                human_bytes(s.bytes),
            ]);
        }
        print!("{}", aligned(&rows, "  "));
    }
    println!(
        "total: {}, {} in the canonical encoding",
        plural(report.rows, "row"),
        human_bytes(report.bytes)
    );
    for subtask in &report.subtasks {
        println!();
        print_subtask(subtask, report.rows_limit);
    }
}

fn print_subtask(s: &SubtaskReport, limit: usize) {
    let handle = match &s.handle {
        None => "no keyed state handle".to_string(),
        Some(h) => format!(
            "{}{} handle, {} file{}, {}",
            h.backend
                .as_ref()
                .map(|b| format!("{b} "))
                .unwrap_or_default(),
            h.kind,
            h.files,
            if h.files == 1 { "" } else { "s" },
            human_bytes(h.bytes)
        ),
    };
    println!(
        "subtask {}: key groups {} to {}, {handle}",
        s.index, s.key_groups.start, s.key_groups.end
    );
    println!(
        "  {} ({}) in {} of {} key group{} shown",
        plural(s.rows, "row"),
        human_bytes(s.bytes),
        s.non_empty_key_groups,
        s.key_group_stats.len(),
        if s.key_group_stats.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    let non_empty: Vec<&KeyGroupReport> = s.key_group_stats.iter().filter(|k| k.rows > 0).collect();
    if !non_empty.is_empty() {
        println!("  rows and bytes per key group (empty ones not listed):");
        for line in non_empty.chunks(KEY_GROUPS_PER_LINE) {
            let cells: Vec<String> = line
                .iter()
                .map(|k| {
                    format!(
                        "{:>5}: {:>5} rows {:>9}",
                        k.key_group,
                        k.rows,
                        human_bytes(k.bytes)
                    )
                })
                .collect();
            println!("  {}", cells.join("  |"));
        }
    }
    match &s.operator_file {
        None => println!("  operator state: none"),
        Some(file) => {
            println!(
                "  operator state ({}, {}):",
                file.path,
                human_bytes(file.bytes)
            );
            if s.operator_states.is_empty() {
                println!("    none shown");
            }
            for state in &s.operator_states {
                print_operator_state(state);
            }
        }
    }
    if limit > 0 {
        for kg in s.key_group_stats.iter().filter(|k| k.rows > 0) {
            print_rows(kg);
        }
    }
}

fn print_operator_state(state: &OperatorStateReport) {
    let codecs = match &state.key_codec {
        Some(key) => format!("{key} -> {}", state.value_codec),
        None => state.value_codec.clone(),
    };
    let what = if state.mode == "broadcast" {
        "broadcast state".to_string()
    } else {
        format!("{} list state", state.mode)
    };
    println!(
        "    {}: {what}, {codecs}, {} entr{}, {}",
        state.name,
        state.entries,
        if state.entries == 1 { "y" } else { "ies" },
        human_bytes(state.bytes)
    );
    for entry in &state.entries_shown {
        println!("      {}", operator_entry(entry));
    }
    let hidden = state
        .entries
        .saturating_sub(state.entries_shown.len() as u64);
    if !state.entries_shown.is_empty() && hidden > 0 {
        println!("      ... {hidden} more");
    }
}

fn operator_entry(e: &OperatorEntryReport) -> String {
    let value = decoded_or_hex(e.value.as_ref(), &e.value_hex);
    match &e.key_hex {
        Some(key_hex) => format!("{} -> {value}", decoded_or_hex(e.key.as_ref(), key_hex)),
        None => value,
    }
}

fn print_rows(kg: &KeyGroupReport) {
    println!(
        "  key group {}: {} row{}, {}{}",
        kg.key_group,
        kg.rows,
        if kg.rows == 1 { "" } else { "s" },
        human_bytes(kg.bytes),
        if (kg.rows_shown.len() as u64) < kg.rows {
            format!(" (first {} shown)", kg.rows_shown.len())
        } else {
            String::new()
        }
    );
    let rows: Vec<Vec<String>> = kg.rows_shown.iter().map(row_cells).collect();
    print!("{}", aligned(&rows, "    "));
}

fn row_cells(r: &RowReport) -> Vec<String> {
    let mut key = decoded_or_hex(r.key.as_ref(), &r.key_hex);
    if !r.namespace_hex.is_empty() {
        key = format!(
            "{key} in {}",
            decoded_or_hex(r.namespace.as_ref(), &r.namespace_hex)
        );
    }
    if let Some(user_key_hex) = &r.user_key_hex {
        key = format!(
            "{key} [{}]",
            decoded_or_hex(r.user_key.as_ref(), user_key_hex)
        );
    }
    let value = match &r.value_hex {
        None => "(tombstone)".to_string(),
        Some(hex) => decoded_or_hex(r.value.as_ref(), hex),
    };
    let mut raw = format!("key 0x{}", r.key_hex);
    if let Some(user_key_hex) = &r.user_key_hex {
        raw.push_str(&format!(" map key 0x{user_key_hex}"));
    }
    if let Some(hex) = &r.value_hex {
        raw.push_str(&format!(" value 0x{hex}"));
    }
    vec![r.state.clone(), key, "=".into(), value, raw]
}

/// The decoded form when there is one, else `0x<hex>`.
fn decoded_or_hex(decoded: Option<&serde_json::Value>, hex: &str) -> String {
    match decoded {
        Some(value) => show(value),
        None => format!("0x{hex}"),
    }
}
