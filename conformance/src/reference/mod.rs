//! A reference backend on `BTreeMap`: the smallest backend that meets the whole contract. Copy
//! it to start a new backend; the conformance suite also uses it as an oracle.
//!
//! Three files, one job each: this one (the factory), `backend.rs` (the live state,
//! [`ReferenceBackend`]) and `view.rs` (the snapshot view and the checkpoint hooks).
//!
//! # What a backend implements
//!
//! - [`KeyedStateBackend`]: byte-level keyed state. Required: `max_parallelism`,
//!   `key_group_range`, `register_state`, `registered_states`, `get`, `put`, `remove`,
//!   `list_get`, `list_append`, `list_replace`, `map_get`, `map_put`, `map_remove`,
//!   `map_entries`, `keys` and `apply_rows` (the restore path). For free (defaults built on the
//!   required ones; override them only to go faster): `get_with`, `map_contains`,
//!   `map_is_empty`. Typed state ([`flowstate_api::typed`]) is built on this trait once, for
//!   every backend.
//! - [`KeyedSnapshotView`]: what a checkpoint reads. It is a **consistent point-in-time copy**
//!   of the keyed state, taken in the synchronous part of a checkpoint and read later while
//!   writers go on. The snapshot writer asks for one key group at a time, in ascending order,
//!   through [`KeyedSnapshotView::for_each_row`]; the view hands over every row of that key
//!   group (in any order within it) and nothing of any other; a key group outside the view's
//!   range is an error. Here the view is a clone of the `BTreeMap`s taken under the backend's
//!   lock: simplest, and O(state) per checkpoint. It is the template, not the fast path: real
//!   backends pin a version instead (heap: epochs, LMDB: a read transaction, RocksDB: a
//!   snapshot), so writers wait for no copy.
//! - [`StateBackend`]: the checkpoint hooks. Required: `snapshot` (the synchronous part:
//!   capture a view, return the [`flowstate_api::SnapshotJob`] that writes and uploads it).
//!   For free: `notify_checkpoint_complete` and `notify_checkpoint_aborted` (no-ops; a backend
//!   with incremental checkpoints, like this one, implements them).
//! - [`StateBackendFactory`]: required `name` and `create`; `restore` comes for free: it
//!   creates an empty backend and hands it to the API's restore driver
//!   ([`flowstate_api::snapshot::restore_into`]), which checks handles, files and every row
//!   (owned key group, key hashing to it, state kind, list encoding) before it calls
//!   `apply_rows`, and rescales (reads only the key groups of the new range).
//!
//! # Policy taken from `flowstate-api`, not re-derived
//!
//! State ids and the compatibility check on re-registration: [`StateRegistry`]. Stored keys:
//! [`flowstate_api::key_layout`] (key group first, big-endian, so each key group is one
//! contiguous key range and each (key, namespace) one key prefix). Lists:
//! [`flowstate_api::list_encoding`]. Full snapshots: [`CanonicalSnapshotJob`]. Incremental
//! checkpoints: [`ChangelogChain`], [`ChangeLog`] and [`ChangelogSnapshotJob`]. Restore: the
//! factory's default. (Ownership and kind checks have no shared helper yet: see
//! `ReferenceBackend::table`.)
//!
//! # Incremental checkpoints: a change log on a base
//!
//! Without immutable files to share (RocksDB shares its SST files), the API's change log is
//! how a backend uploads only what changed, and the suite requires that
//! (`incremental::small_change_uploads_little`: writing full at an incremental request, which
//! the trait allows, fails it). Every write records its (state, key group, key, namespace) in
//! a [`ChangeLog`], under the lock of the write. At an incremental checkpoint the
//! [`ChangelogChain`] plans a full base or a delta; a delta view emits, per changed
//! (key, namespace), a tombstone and then its current rows. Planning and sealing happen under
//! the lock completion notices also take, so a delta holds exactly the changes since the base
//! its plan names. A full checkpoint is a [`CanonicalSnapshotJob`] outside the chain,
//! registered with [`ChangelogChain::record_full`]: once it completes, the next incremental
//! checkpoint writes a new base (retention may delete the old one).
//!
//! [`KeyedStateBackend`]: flowstate_api::KeyedStateBackend
//! [`KeyedSnapshotView`]: flowstate_api::KeyedSnapshotView
//! [`KeyedSnapshotView::for_each_row`]: flowstate_api::KeyedSnapshotView::for_each_row
//! [`StateBackend`]: flowstate_api::StateBackend
//! [`StateRegistry`]: flowstate_api::state::StateRegistry
//! [`CanonicalSnapshotJob`]: flowstate_api::snapshot::CanonicalSnapshotJob
//! [`ChangelogChain`]: flowstate_api::changelog::ChangelogChain
//! [`ChangelogChain::record_full`]: flowstate_api::changelog::ChangelogChain::record_full
//! [`ChangeLog`]: flowstate_api::changelog::ChangeLog
//! [`ChangelogSnapshotJob`]: flowstate_api::changelog::ChangelogSnapshotJob
//!
//! # Running the suite
//!
//! In `tests/conformance.rs` of the backend's crate, with `flowstate-conformance` as a
//! dev-dependency (this backend's is `conformance/tests/reference.rs`):
//!
//! ```ignore
//! flowstate_conformance::conformance_tests!(my_backend::MyFactory::new());
//! ```
//!
//! then `cargo test --test conformance` (`cargo test --test conformance semantics::` runs one
//! theme). Using the backend:
//!
//! ```
//! use std::sync::Arc;
//! use flowstate_api::typed::ValueStateDescriptor;
//! use flowstate_api::{KeyContext, MaxParallelism, StateBackendFactory};
//! use flowstate_conformance::reference::ReferenceBackendFactory;
//!
//! let max = MaxParallelism::new(128)?;
//! let backend = ReferenceBackendFactory::new().create(max, max.full_range())?;
//! let count = ValueStateDescriptor::<u64>::new("count").bind(Arc::new(backend))?;
//! let key = KeyContext::new(b"user-42".to_vec(), max);
//! count.update(&key, &7)?;
//! assert_eq!(count.get(&key)?, Some(7));
//! # Ok::<(), flowstate_api::Error>(())
//! ```

mod backend;
mod view;

use flowstate_api::{KeyGroupRange, MaxParallelism, Result, StateBackendFactory};

pub use backend::ReferenceBackend;
pub use view::ReferenceSnapshotView;

/// Creates [`ReferenceBackend`]s. It has no settings; a real factory holds the backend's
/// (directories, sizes, a [`flowstate_api::changelog::ChangelogPolicy`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackendFactory;

impl ReferenceBackendFactory {
    /// The factory (same as `Default`).
    pub fn new() -> Self {
        Self
    }
}

impl StateBackendFactory for ReferenceBackendFactory {
    type Backend = ReferenceBackend;

    fn name(&self) -> &str {
        "reference"
    }

    fn create(&self, max: MaxParallelism, range: KeyGroupRange) -> Result<ReferenceBackend> {
        ReferenceBackend::new(max, range)
    }
}
