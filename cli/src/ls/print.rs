//! `ls`'s report for people: the checkpoints as a table (with `--subtasks`, their subtasks
//! too), then the shared files and how the registry copy compares.

use super::{ids, LsReport, SubtaskReport, REGISTRY_FILE};
use crate::output::{self, table};

pub fn human(report: &LsReport, subtasks: bool) {
    let retained = report.checkpoints.iter().filter(|c| c.retained).count();
    let others = report.checkpoints.len() - retained;
    if report.checkpoints.is_empty() {
        println!("{}: no checkpoints", report.storage);
    } else {
        println!(
            "{}: {retained} retained checkpoint{}{}",
            report.storage,
            if retained == 1 { "" } else { "s" },
            if others > 0 {
                format!(", {others} not completed")
            } else {
                String::new()
            }
        );
        println!();
        let rows: Vec<Vec<String>> = report
            .checkpoints
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.status.to_string(),
                    c.time
                        .as_deref()
                        .map_or("-".into(), |t| t.replace('T', " ").replace('Z', "")),
                    opt(c.parallelism),
                    opt(c.max_parallelism),
                    if c.retained {
                        kinds_summary(&c.subtasks)
                    } else {
                        c.problem
                            .clone()
                            .unwrap_or_else(|| "no manifest (pending, aborted or left over)".into())
                    },
                    c.files.to_string(),
                    output::human_bytes(c.total_bytes),
                    output::human_bytes(c.shared_bytes),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "STATUS",
                    "TIME (UTC)",
                    "P",
                    "MAX",
                    "KEYED STATE",
                    "FILES",
                    "TOTAL",
                    "SHARED"
                ],
                &rows
            )
        );
    }
    if subtasks {
        let rows: Vec<Vec<String>> = report
            .checkpoints
            .iter()
            .flat_map(|c| {
                c.subtasks.iter().map(move |s| {
                    vec![
                        c.id.to_string(),
                        s.subtask_index.to_string(),
                        s.key_groups.to_string(),
                        kind_label(s),
                        output::human_bytes(s.keyed_bytes),
                        output::human_bytes(s.operator_bytes),
                        output::human_bytes(s.shared_bytes),
                    ]
                })
            })
            .collect();
        if !rows.is_empty() {
            println!();
            print!(
                "{}",
                table(
                    &[
                        "CHECKPOINT",
                        "SUBTASK",
                        "KEY GROUPS",
                        "KEYED STATE",
                        "KEYED",
                        "OPERATOR",
                        "SHARED"
                    ],
                    &rows
                )
            );
        }
    }
    let registry = &report.registry;
    println!();
    if registry.files.is_empty() {
        println!("shared files: none (no retained checkpoint references a shared file)");
    } else {
        let total: u64 = registry.files.iter().map(|f| f.size).sum();
        println!(
            "shared files: {} ({}), the retained checkpoints using each:",
            registry.files.len(),
            output::human_bytes(total)
        );
        let rows: Vec<Vec<String>> = registry
            .files
            .iter()
            .map(|f| {
                vec![
                    f.path.clone(),
                    output::human_bytes(f.size),
                    f.created_by.to_string(),
                    ids(f.used_by.iter().copied()),
                    if f.present { "" } else { "MISSING" }.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["PATH", "SIZE", "CREATED BY", "USED BY", ""], &rows)
        );
    }
    match registry.stored_copy {
        "present" if registry.discrepancies.is_empty() => {
            println!("registry copy {REGISTRY_FILE}: agrees with the manifests")
        }
        "present" => println!("registry copy {REGISTRY_FILE}: differs from the manifests:"),
        "missing" => println!(
            "registry copy {REGISTRY_FILE}: none (written at the next completed checkpoint)"
        ),
        _ => println!(
            "registry copy {REGISTRY_FILE}: {}",
            registry
                .stored_copy_problem
                .as_deref()
                .unwrap_or("unreadable")
        ),
    }
    for d in &registry.discrepancies {
        println!("  {d}");
    }
    if !registry.deferred_deletes.is_empty() {
        println!(
            "{} shared files wait to be deleted: {}",
            registry.deferred_deletes.len(),
            registry.deferred_deletes.join(", ")
        );
    }
    if !report.unreferenced_shared_files.is_empty() {
        let bytes: u64 = report
            .unreferenced_shared_files
            .iter()
            .map(|f| f.size)
            .sum();
        println!(
            "{} shared files ({}) are referenced by no retained checkpoint (left by aborted or pending checkpoints; the coordinator deletes them):",
            report.unreferenced_shared_files.len(),
            output::human_bytes(bytes)
        );
        for f in &report.unreferenced_shared_files {
            println!("  {} ({})", f.path, output::human_bytes(f.size));
        }
    }
}

fn opt(value: Option<u32>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

/// A subtask's handle for people: `changelog base+2`, `native rocksdb (5 files)`.
fn kind_label(s: &SubtaskReport) -> String {
    match s.kind {
        "changelog" => format!("changelog base+{}", s.deltas),
        "native" => format!(
            "native {} ({} files)",
            s.native_backend.as_deref().unwrap_or("?"),
            s.keyed_files
        ),
        other => other.to_string(),
    }
}

/// The subtasks' kinds in one cell: runs of equal kinds counted (`changelog base+1 x3`).
fn kinds_summary(subtasks: &[SubtaskReport]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for s in subtasks {
        let label = match s.kind {
            // Native file counts differ per subtask; the kind is what matters here.
            "native" => format!("native {}", s.native_backend.as_deref().unwrap_or("?")),
            _ => kind_label(s),
        };
        match runs.last_mut() {
            Some((last, n)) if *last == label => *n += 1,
            _ => runs.push((label, 1)),
        }
    }
    if runs.is_empty() {
        return "-".into();
    }
    runs.into_iter()
        .map(|(label, n)| {
            if n == 1 {
                label
            } else {
                format!("{label} x{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
