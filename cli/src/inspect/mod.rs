//! `flowstate inspect`: what one checkpoint holds. Its keyed states (kind, codecs), per key
//! group row counts and bytes, decoded rows, and every subtask's operator state (list and
//! broadcast states, their modes and entry counts).
//!
//! Every subtask is restored through the runtime as an engine would restore it (see
//! [`crate::restore`]): canonical and changelog handles into the heap backend, native RocksDB
//! handles into RocksDB in a temporary directory, so the rows shown are the rows a job would
//! get back, whatever the handle kind. Operator state is read from each subtask's own file
//! (what that subtask wrote, before any redistribution). Nothing in the storage is created or
//! changed.

mod decode;
mod print;
mod report;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Args;
use flowstate_api::backend::KeyedSnapshotView;
use flowstate_api::operator::{read_operator_state, OperatorStateData, OperatorStateMode};
use flowstate_api::snapshot::encode_row;
use flowstate_api::{
    list_encoding, CheckpointId, CheckpointManifest, CheckpointStorage, KeyGroup, KeyGroupRange,
    KeyedStateHandle, Parallelism, Redistribution, RowValue, StateId, StateMetadata,
};
use serde_json::Value;

use crate::output::{self, FileReport};
use crate::resolve::{self, Chosen};
use crate::restore::Reader;
use decode::{decode_key, decode_with_codec, hex, KeyType};
pub use report::*;

/// `flowstate inspect`'s arguments.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  flowstate inspect ./ckpts\n  flowstate inspect ./ckpts --checkpoint 12 --subtask 1\n  flowstate inspect s3://bucket/job --state count --key-group 17 --rows 50\n  flowstate inspect ./ckpts --rows 3 --json"
)]
pub struct InspectArgs {
    /// The checkpoint storage: a directory, file:///dir, s3://bucket/prefix (with the AWS_*
    /// variables) or memory://. Never created or changed.
    storage: String,
    /// The checkpoint to inspect (default: the latest).
    #[arg(long, value_name = "ID")]
    checkpoint: Option<u64>,
    /// Only this subtask of the checkpoint (0 to parallelism - 1).
    #[arg(long, value_name = "N")]
    subtask: Option<u32>,
    /// Only the keyed or operator state of this name.
    #[arg(long, value_name = "NAME")]
    state: Option<String>,
    /// Only this key group (0 to max parallelism - 1), with its decoded rows.
    #[arg(long, value_name = "KG")]
    key_group: Option<u32>,
    /// Show up to N decoded rows of every key group shown, and up to N entries of every
    /// operator state (default: 20 with --key-group, none otherwise).
    #[arg(long, value_name = "N")]
    rows: Option<usize>,
    /// How to decode keys, whose codec checkpoints do not record: auto shows a key that is
    /// exactly a postcard string as that string; hex decodes nothing.
    #[arg(long, value_enum, default_value = "auto", value_name = "TYPE")]
    key_type: KeyType,
    /// Print the report as JSON (see `InspectReport` for the fields).
    #[arg(long)]
    json: bool,
}

/// Runs `flowstate inspect`: prints the report (as JSON with `--json`).
pub async fn run(args: InspectArgs) -> Result<()> {
    let storage = resolve::open_read_only(&args.storage)?;
    let Chosen { ids, manifest } = resolve::read_checkpoint(&storage, args.checkpoint).await?;
    let scope = Scope::new(&manifest, &args)?;
    let report = inspect(&storage, &manifest, &ids, &scope, &args).await?;
    if args.json {
        output::print_json(&report)
    } else {
        print::human(&report);
        Ok(())
    }
}

/// Which subtasks, key groups and rows to show: every flag checked against the checkpoint
/// before anything is read.
struct Scope {
    /// (subtask index, key groups of it to walk).
    subtasks: Vec<(u32, KeyGroupRange)>,
    rows_limit: usize,
}

impl Scope {
    fn new(manifest: &CheckpointManifest, args: &InspectArgs) -> Result<Self> {
        let id = manifest.checkpoint_id;
        let parallelism = manifest.parallelism.get();
        let max = manifest.max_parallelism;
        if let Some(index) = args.subtask {
            if index >= parallelism {
                bail!(
                    "--subtask {index}: checkpoint {id} has {parallelism} subtask{} (0 to {})",
                    if parallelism == 1 { "" } else { "s" },
                    parallelism - 1
                );
            }
        }
        let key_group = match args.key_group {
            None => None,
            Some(kg) => Some(KeyGroup::new(kg, max).map_err(|_| {
                anyhow::anyhow!(
                    "--key-group {kg}: checkpoint {id} has max parallelism {max}, so key groups 0 to {}",
                    max.get() - 1
                )
            })?),
        };
        let mut subtasks = Vec::new();
        for subtask in &manifest.subtasks {
            let range = subtask.key_group_range;
            if args.subtask.is_some_and(|i| i != subtask.subtask_index) {
                continue;
            }
            match key_group {
                None => subtasks.push((subtask.subtask_index, range)),
                Some(kg) if range.contains(kg) => {
                    subtasks.push((subtask.subtask_index, KeyGroupRange::single(kg)))
                }
                Some(kg) if args.subtask.is_some() => bail!(
                    "--key-group {kg}: subtask {} of checkpoint {id} owns key groups {} to {}",
                    subtask.subtask_index,
                    range.start(),
                    range.end()
                ),
                Some(_) => {}
            }
        }
        if subtasks.is_empty() {
            bail!("checkpoint {id} has no subtask to show for these filters");
        }
        let rows_limit = args
            .rows
            .unwrap_or(if key_group.is_some() { 20 } else { 0 });
        Ok(Self {
            subtasks,
            rows_limit,
        })
    }
}

async fn inspect(
    storage: &CheckpointStorage,
    manifest: &CheckpointManifest,
    ids: &[CheckpointId],
    scope: &Scope,
    args: &InspectArgs,
) -> Result<InspectReport> {
    let id = manifest.checkpoint_id;
    let wanted = |name: &str| args.state.as_deref().is_none_or(|w| w == name);
    let mut reader = Reader::new();
    let mut states: BTreeMap<String, StateReport> = BTreeMap::new();
    let mut operator_names: Vec<String> = Vec::new();
    let mut subtasks = Vec::new();
    let bar = output::progress(scope.subtasks.len() as u64, "reading subtasks", args.json);
    for &(index, range) in &scope.subtasks {
        let handle = manifest
            .subtasks
            .iter()
            .find(|s| s.subtask_index == index)
            .with_context(|| format!("checkpoint {id} lists no subtask {index}"))?;

        // Operator state, as this subtask wrote it.
        let mut operator_states = Vec::new();
        if let Some(file) = &handle.operator {
            let snapshot = read_operator_state(storage, file).await.with_context(|| {
                format!("reading the operator state of subtask {index} of checkpoint {id}")
            })?;
            for entry in snapshot.states() {
                operator_names.push(entry.metadata.name.clone());
                if wanted(&entry.metadata.name) {
                    operator_states.push(operator_state(entry, scope.rows_limit));
                }
            }
        }

        // Keyed state, restored as a job would restore this subtask; for one key group, as the
        // job at parallelism = max parallelism would restore its subtask owning exactly that
        // key group, so only that key group's blocks are read and held (native RocksDB
        // handles are still downloaded whole: RocksDB opens them whole).
        let (parallelism, restore_index) = match args.key_group {
            Some(kg) => (Parallelism::new(manifest.max_parallelism.get())?, kg),
            None => (manifest.parallelism, index),
        };
        let restored = reader
            .restore(storage, manifest, parallelism, restore_index)
            .await
            .with_context(|| format!("restoring subtask {index} of checkpoint {id}"))?;
        let view = restored.view();
        let metas: BTreeMap<StateId, StateMetadata> = view.states().into_iter().collect();
        for meta in metas.values() {
            states
                .entry(meta.name.clone())
                .or_insert_with(|| state_report(meta));
        }
        let walked = walk(
            view.as_ref(),
            &metas,
            range,
            &wanted,
            scope.rows_limit,
            args.key_type,
        )
        .with_context(|| {
            format!("reading the keyed state of subtask {index} of checkpoint {id}")
        })?;
        for (name, (rows, bytes)) in &walked.per_state {
            if let Some(state) = states.get_mut(name) {
                state.rows += rows;
                state.bytes += bytes;
            }
        }
        subtasks.push(SubtaskReport {
            index,
            key_groups: handle.key_group_range.into(),
            handle: handle.keyed.as_ref().map(handle_report),
            rows: walked.key_groups.iter().map(|k| k.rows).sum(),
            bytes: walked.key_groups.iter().map(|k| k.bytes).sum(),
            non_empty_key_groups: walked.key_groups.iter().filter(|k| k.rows > 0).count() as u32,
            key_group_stats: walked.key_groups,
            operator_file: handle.operator.as_ref().map(FileReport::from),
            operator_states,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    if let Some(name) = &args.state {
        if !states.contains_key(name) && !operator_names.contains(name) {
            operator_names.sort();
            operator_names.dedup();
            bail!(
                "--state {name}: checkpoint {id} has no state of that name{}; keyed states: {}; operator states: {}",
                if scope.subtasks.len() == manifest.subtasks.len() { String::new() } else { " in the subtasks shown".into() },
                names_or_none(states.keys()),
                names_or_none(operator_names.iter())
            );
        }
    }
    let states: Vec<StateReport> = states.into_values().filter(|s| wanted(&s.name)).collect();
    Ok(InspectReport {
        storage: storage.location().to_string(),
        checkpoint_id: id.get(),
        checkpoints: ids.iter().map(|i| i.get()).collect(),
        max_parallelism: manifest.max_parallelism.get(),
        parallelism: manifest.parallelism.get(),
        subtask_filter: args.subtask,
        state_filter: args.state.clone(),
        key_group_filter: args.key_group,
        rows_limit: scope.rows_limit,
        rows: subtasks.iter().map(|s| s.rows).sum(),
        bytes: subtasks.iter().map(|s| s.bytes).sum(),
        states,
        subtasks,
    })
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn state_report(meta: &StateMetadata) -> StateReport {
    StateReport {
        name: meta.name.clone(),
        kind: meta.kind.to_string(),
        namespace_codec: meta.namespace_codec.clone(),
        value_codec: meta.value_codec.clone(),
        user_key_codec: meta.user_key_codec.clone(),
        ttl: None,
        rows: 0,
        bytes: 0,
    }
}

fn handle_report(handle: &KeyedStateHandle) -> HandleReport {
    let (kind, backend) = output::handle_kind(handle);
    HandleReport {
        kind: kind.into(),
        backend: backend.map(str::to_string),
        files: handle.files().len(),
        bytes: handle.total_size(),
        description: handle.describe(),
    }
}

/// What walking a subtask's view found.
struct Walked {
    key_groups: Vec<KeyGroupReport>,
    /// Rows and bytes per state name.
    per_state: BTreeMap<String, (u64, u64)>,
}

/// A row copied out of the view, to be sorted before it is shown.
struct OwnedRow {
    state: StateId,
    key: Vec<u8>,
    namespace: Vec<u8>,
    kind: &'static str,
    user_key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// Counts the rows and bytes of every key group of `range` (states `wanted` only), and keeps
/// up to `limit` rows of each.
fn walk(
    view: &dyn KeyedSnapshotView,
    metas: &BTreeMap<StateId, StateMetadata>,
    range: KeyGroupRange,
    wanted: &dyn Fn(&str) -> bool,
    limit: usize,
    key_type: KeyType,
) -> Result<Walked> {
    let mut per_state: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut key_groups = Vec::new();
    let mut buf = Vec::new();
    for kg in range.iter() {
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut kept: Vec<OwnedRow> = Vec::new();
        view.for_each_row(kg, &mut |row| {
            let Some(meta) = metas.get(&row.state) else {
                return Err(flowstate_api::Error::corrupt(
                    format!("key group {kg}"),
                    format!(
                        "a row of state #{} that the view does not list",
                        row.state.0
                    ),
                ));
            };
            if !wanted(&meta.name) {
                return Ok(());
            }
            buf.clear();
            encode_row(&mut buf, row.state.0, &row);
            let size = buf.len() as u64;
            rows += 1;
            bytes += size;
            let totals = per_state.entry(meta.name.clone()).or_default();
            totals.0 += 1;
            totals.1 += size;
            if limit > 0 {
                let (kind, user_key, value) = match row.value {
                    RowValue::Value(v) => ("value", None, Some(v.to_vec())),
                    RowValue::List(v) => ("list", None, Some(v.to_vec())),
                    RowValue::MapEntry { user_key, value } => {
                        ("map-entry", Some(user_key.to_vec()), Some(value.to_vec()))
                    }
                    RowValue::Tombstone => ("tombstone", None, None),
                    _ => ("other", None, None),
                };
                kept.push(OwnedRow {
                    state: row.state,
                    key: row.key.to_vec(),
                    namespace: row.namespace.to_vec(),
                    kind,
                    user_key,
                    value,
                });
            }
            Ok(())
        })?;
        kept.sort_by(|a, b| {
            (
                &metas.get(&a.state).map(|m| &m.name),
                &a.key,
                &a.namespace,
                &a.user_key,
            )
                .cmp(&(
                    &metas.get(&b.state).map(|m| &m.name),
                    &b.key,
                    &b.namespace,
                    &b.user_key,
                ))
        });
        kept.truncate(limit);
        let rows_shown = kept
            .iter()
            .filter_map(|row| Some(row_report(row, metas.get(&row.state)?, key_type)))
            .collect();
        key_groups.push(KeyGroupReport {
            key_group: kg.get(),
            rows,
            bytes,
            rows_shown,
        });
    }
    Ok(Walked {
        key_groups,
        per_state,
    })
}

fn row_report(row: &OwnedRow, meta: &StateMetadata, key_type: KeyType) -> RowReport {
    let value = row.value.as_deref().and_then(|v| {
        if row.kind == "list" {
            decode_list(&meta.value_codec, v)
        } else {
            decode_with_codec(&meta.value_codec, v)
        }
    });
    RowReport {
        state: meta.name.clone(),
        kind: row.kind.into(),
        key_hex: hex(&row.key),
        key: decode_key(key_type, &row.key),
        namespace_hex: hex(&row.namespace),
        namespace: decode_with_codec(&meta.namespace_codec, &row.namespace),
        user_key_hex: row.user_key.as_deref().map(hex),
        user_key: row.user_key.as_deref().and_then(|k| {
            meta.user_key_codec
                .as_deref()
                .and_then(|codec| decode_with_codec(codec, k))
        }),
        value_hex: row.value.as_deref().map(hex),
        value,
    }
}

/// A stored list as an array of its decoded elements, when every element decodes.
fn decode_list(codec: &str, bytes: &[u8]) -> Option<Value> {
    let elements = list_encoding::decode(bytes).ok()?;
    elements
        .iter()
        .map(|e| decode_with_codec(codec, e))
        .collect::<Option<Vec<Value>>>()
        .map(Value::Array)
}

fn operator_state(
    entry: &flowstate_api::operator::OperatorStateEntry,
    limit: usize,
) -> OperatorStateReport {
    let meta = &entry.metadata;
    let mode = match meta.mode {
        OperatorStateMode::List(Redistribution::EvenSplit) => "even-split",
        OperatorStateMode::List(Redistribution::Union) => "union",
        OperatorStateMode::Broadcast => "broadcast",
        _ => "other",
    };
    let value = |v: &[u8]| decode_with_codec(&meta.value_codec, v);
    let key = |k: &[u8]| {
        meta.key_codec
            .as_deref()
            .and_then(|codec| decode_with_codec(codec, k))
    };
    let (entries, bytes, entries_shown) = match &entry.data {
        OperatorStateData::List(elements) => (
            elements.len() as u64,
            elements.iter().map(|e| e.len() as u64).sum(),
            elements
                .iter()
                .take(limit)
                .map(|e| OperatorEntryReport {
                    key_hex: None,
                    key: None,
                    value_hex: hex(e),
                    value: value(e),
                })
                .collect(),
        ),
        OperatorStateData::Broadcast(map) => (
            map.len() as u64,
            map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            map.iter()
                .take(limit)
                .map(|(k, v)| OperatorEntryReport {
                    key_hex: Some(hex(k)),
                    key: key(k),
                    value_hex: hex(v),
                    value: value(v),
                })
                .collect(),
        ),
        // Contents of a kind this build cannot show.
        _ => (0, 0, Vec::new()),
    };
    OperatorStateReport {
        name: meta.name.clone(),
        mode: mode.into(),
        value_codec: meta.value_codec.clone(),
        key_codec: meta.key_codec.clone(),
        entries,
        bytes,
        entries_shown,
    }
}
