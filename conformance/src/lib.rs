//! # flowstate-conformance
//!
//! The contract every flowstate backend is held to, as a library. A backend (ours or yours)
//! runs the whole suite with one line in a test file, e.g. `tests/conformance.rs`:
//!
//! ```ignore
//! flowstate_conformance::conformance_tests!(my_backend::MyFactory::new());
//! ```
//!
//! with `flowstate-conformance` as a dev-dependency. The macro expands to one `#[test]` per
//! case, in one module per theme (`cargo test --test conformance rescale::` runs one theme).
//! Each test evaluates the factory expression afresh and calls a plain generic function of
//! this crate, `pub fn case<F: StateBackendFactory>(factory: &F)`, which panics with a
//! message naming what went wrong. The functions are public, so a backend can also call a
//! single case from its own test, or run a case under other conditions.
//!
//! Cases use only the public API: typed state handles ([`flowstate_api::typed`]) bound to the
//! backend, the raw [`flowstate_api::KeyedStateBackend`] trait where bytes matter, and
//! checkpoint / restore driven the way an engine drives them ([`harness`]): the synchronous
//! part of every subtask first, uploads after, the manifest last, then completion notices;
//! restores through [`flowstate_api::StateBackendFactory::restore`] for each new subtask.
//! Checkpoints go to an in-memory `object_store`; a backend needing local directories makes
//! them in its factory.
//!
//! The building blocks are public too: [`harness`] (checkpoint / restore / rescale of a whole
//! operator), [`dataset`] (one state of every kind beside a `BTreeMap` model),
//! [`fixtures`] (keys and state metadata backend tests can share, a deterministic random
//! source, lifecycles, and object stores for tests on one pass-through base,
//! [`fixtures::ForwardingStore`]: one that counts what restores read, one that fails chosen
//! calls):
//!
//! ```
//! use std::sync::Arc;
//! use flowstate_api::CheckpointStorage;
//! use flowstate_conformance::fixtures::CountingStore;
//! use flowstate_conformance::harness::block_on;
//!
//! let store = Arc::new(CountingStore::new(object_store::memory::InMemory::new()));
//! let storage = CheckpointStorage::new(store.clone(), "root");
//! block_on(async {
//!     storage.put("file", "0123456789".into(), false).await?;
//!     storage.get_range("file", 2..5).await
//! })?;
//! assert_eq!((store.bytes_read(), store.reads()), (3, 1));
//! # Ok::<(), flowstate_api::Error>(())
//! ```
//!
//! ## Themes
//!
//! - [`semantics`]: Flink's semantics of value, list, map, reducing and aggregating state
//!   (an empty list or map reads as absent and is not enumerated; clear removes; reducing and
//!   aggregating fold on add; map entries / user keys / values / contains / is-empty /
//!   remove), zero-byte values that are present, namespaces that isolate, key / namespace /
//!   user-key byte boundaries, `merge_namespaces`, exact key enumeration across key groups,
//!   `apply_to_all_keys` while the callback clears and adds keys, isolation of states,
//!   re-registration, `KeyGroupNotOwned` for keys of another range, `apply_rows` order,
//!   large entries, and concurrent writers.
//! - [`snapshots`]: round trips of every kind through full and incremental checkpoints; chains
//!   of checkpoints with an aborted and an unconfirmed one, each restorable to its own point
//!   in time; snapshot isolation (writes after the synchronous part are not in the
//!   checkpoint but are in the next); a snapshot taken while two threads write is one point
//!   in time; empty backends; restoring one subtask of eight reads about an eighth of the
//!   bytes (through a counting object store); canonical files are key-group ordered with one
//!   block per non-empty key group; retention deletes nothing a retained checkpoint needs.
//! - [`rescale`]: every kind in three namespaces through 4→2, 2→4, 2→2, 15→77, 77→15,
//!   1→3→1, 1→7→2→1 and 4→1 at max parallelism 128 (full and incremental), 3→128→2, and
//!   chains at max parallelism 32768 and 10; after each restore every key's state is held by
//!   exactly the subtask owning its key group, compared with a `BTreeMap` model.
//! - [`errors`]: `MaxParallelismMismatch`, `StateKindMismatch`, `StateCodecMismatch` (live and
//!   after a restore), flipped bytes in blocks / metadata / index / trailer
//!   (`ChecksumMismatch` or `Corrupt`), truncated files (`Corrupt`), an unknown format version
//!   (`UnsupportedFormatVersion`), a missing file; never a panic.
//! - [`integrity`]: every byte of every file of a small checkpoint (full, incremental base and
//!   delta) flipped two ways and every truncation (native files: sampled positions) restore
//!   to a damage error or exactly the checkpoint's state, never a panic; crafted files with
//!   valid checksums (blocks out of order, overlapping or empty, rows in the wrong key group
//!   or of the wrong kind, non-canonical varints, a full file as a delta, a missing or
//!   reordered delta) and handles that disagree with their files or overlap are refused with
//!   the same `Corrupt` error on every backend.
//! - [`faults`]: every object-store call of a whole cycle (checkpoints with shared files,
//!   retention, an abort, a restore, a reopen) fails once in turn, before or after taking
//!   effect ([`fixtures::FaultyStore`]): the checkpoint `complete` confirmed last stays the
//!   newest, every file a retained checkpoint references exists, and it restores exactly.
//! - [`operator`]: operator list state with even-split and union redistribution and broadcast
//!   state, checkpointed beside keyed state and restored across rescales; one name in two
//!   modes is `OperatorStateModeMismatch`.
//! - [`overlap`]: Flink's parallel async snapshots: a checkpoint captured while the previous
//!   one's job has not run, the two jobs in either order or the first settled before the
//!   second's job runs, the first completed, aborted or cancelled (its job dropped without
//!   running); each restores to its own point in time, the next full and incremental
//!   checkpoints are correct, and garbage collection leaves only referenced files.
//! - [`model`]: a proptest model-based test: random sequences of writes of every kind in two
//!   namespaces, full / incremental / aborted checkpoints and restores at another parallelism,
//!   compared after every step with a `BTreeMap` model (shrunk to a minimal failing sequence;
//!   `FLOWSTATE_PROPTEST_CASES` sets the number of cases, default 256).
//! - [`notifications`]: completion and abort notices lost, late, duplicated and reordered,
//!   under retention 1 to 3 and random mixes of full and incremental checkpoints: at most one
//!   attempt in a row fails, and every retained checkpoint restores exactly.
//!
//! Data sizes are modest (a few thousand keys per case, 20 000 in the ranged-read cases) so
//! the suite runs in debug builds of disk-based backends too.
//!
//! ## A template backend
//!
//! [`reference`](mod@reference) is a backend on `BTreeMap` that passes the whole suite
//! (`tests/reference.rs`): the module to copy when writing a new backend, with module docs on
//! which traits and methods a backend implements and how its snapshot views behave.
//!
//! ## Backends with native snapshots
//!
//! The file-level cases (file layout, flipped bytes, truncation, format version) look at
//! canonical-format files ([`flowstate_api::KeyedStateHandle::Canonical`] and
//! [`flowstate_api::KeyedStateHandle::Changelog`]). For a backend whose handles are
//! [`flowstate_api::KeyedStateHandle::Native`], flipped bytes and truncation are applied to
//! its largest native file and must give `ChecksumMismatch`, `Corrupt` or `Backend`; the
//! layout and version checks, which only canonical files have, are reported as skipped.

pub mod dataset;
pub mod errors;
pub mod faults;
pub mod fixtures;
pub mod harness;
pub mod incremental;
pub mod integrity;
pub mod model;
pub mod notifications;
pub mod operator;
pub mod overlap;
pub mod reference;
pub mod rescale;
pub mod semantics;
pub mod snapshots;

/// Expands to every conformance case as a `#[test]`, for the factory expression given.
/// The expression is evaluated once per case.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@expand $factory;
            incremental {
                chain_restores_from_every_retained_checkpoint,
                aborted_checkpoints_are_never_bases,
                retention_deletes_exactly_unreferenced_files,
                chains_are_rebased,
                registry_survives_restart,
                full_and_incremental_restore_agree,
                small_change_uploads_little,
            }
            semantics {
                value_state,
                get_with_agrees_with_get,
                empty_encodings_are_present,
                list_state,
                map_state,
                reducing_state,
                aggregating_state,
                namespaces_isolate,
                key_namespace_boundaries,
                merge_namespaces_list,
                merge_namespaces_reducing,
                merge_namespaces_aggregating,
                keys_enumeration,
                apply_to_all_keys_tolerates_changes,
                states_are_isolated,
                reregistering_returns_same_state,
                key_group_not_owned,
                apply_rows_in_order,
                large_entries,
                concurrent_access,
            }
            snapshots {
                round_trip_full,
                round_trip_incremental,
                checkpoint_chain_full,
                checkpoint_chain_incremental,
                isolation_full,
                isolation_incremental,
                snapshot_during_writes_full,
                snapshot_during_writes_incremental,
                empty_backend_full,
                empty_backend_incremental,
                ranged_restore_full,
                ranged_restore_incremental,
                canonical_files_are_key_group_ordered,
                retention_keeps_needed_files,
            }
            rescale {
                scale_down_4_to_2_full,
                scale_down_4_to_2_incremental,
                scale_up_2_to_4_full,
                scale_up_2_to_4_incremental,
                unchanged_2_to_2_full,
                unchanged_2_to_2_incremental,
                scale_up_15_to_77_full,
                scale_up_15_to_77_incremental,
                scale_down_77_to_15_full,
                scale_down_77_to_15_incremental,
                chain_1_3_1_full,
                chain_1_3_1_incremental,
                chain_1_7_2_1_full,
                chain_1_7_2_1_incremental,
                several_into_one_full,
                several_into_one_incremental,
                one_key_group_per_subtask,
                max_parallelism_32768,
                max_parallelism_10,
            }
            errors {
                max_parallelism_mismatch,
                state_kind_mismatch,
                state_codec_mismatch,
                corrupt_bytes_are_detected,
                truncated_file_is_corrupt,
                unknown_format_version,
                missing_file_is_an_error,
            }
            overlap {
                overlapping_snapshots_full,
                overlapping_snapshots_incremental,
                cancelled_snapshot_full,
                cancelled_snapshot_incremental,
            }
            integrity {
                every_damaged_byte_is_detected,
                crafted_files_are_refused,
            }
            faults {
                storage_faults_never_lose_the_latest_checkpoint,
            }
            operator {
                even_split_list_state,
                union_list_state,
                broadcast_state,
                operator_state_mode_mismatch,
            }
            model {
                random_operations_match_model,
            }
            notifications {
                lost_and_reordered_notices_cost_at_most_one_attempt,
            }
        );
    };
    (@expand $factory:expr; $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[test]
                    fn $case() {
                        $crate::$module::$case(&$factory);
                    }
                )*
            }
        )*
    };
}
