//! The open database: a RocksDB handle in its instance directory, the column family of each
//! state, the record of a state that native checkpoints keep, and the ways this crate opens
//! and scans databases (its own, and checkpoints read-only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowstate_api::{Error, Result, StateId, StateKind, StateMetadata};
use parking_lot::RwLock;
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options,
    ReadOptions, DB,
};
use self_cell::self_cell;

use crate::error::{engine, RocksDbError};

/// The database type: multi-threaded column families, so states can be registered through
/// `&self` while other threads read and write.
pub(crate) type Db = DBWithThreadMode<MultiThreaded>;

/// An open database and the instance directory it lives in. Fields drop in order: the
/// database closes before the directory is removed.
pub(crate) struct OpenDb {
    pub(crate) db: Db,
    pub(crate) dir: tempfile::TempDir,
}

impl OpenDb {
    pub(crate) fn db_path(dir: &Path) -> PathBuf {
        dir.join("db")
    }
    pub(crate) fn checkpoints_path(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }
}

/// A registered state's column family and kind.
pub(crate) struct StateCf<'db> {
    pub(crate) handle: Arc<BoundColumnFamily<'db>>,
    pub(crate) kind: StateKind,
}

/// Column-family handles indexed by [`StateId`]: resolved once at registration so that state
/// access does not look column families up by name.
pub(crate) type CfTable<'db> = RwLock<Vec<StateCf<'db>>>;

self_cell!(
    pub(crate) struct DbCell {
        owner: Arc<OpenDb>,
        #[not_covariant]
        dependent: CfTable,
    }
);

/// The column family that holds state `id` (benchmarks of raw RocksDB use the same name).
pub fn column_family_name(id: StateId) -> String {
    format!("s{}", id.0)
}

/// A state as a native checkpoint records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredState {
    pub(crate) column_family: String,
    pub(crate) metadata: StateMetadata,
}

impl DbCell {
    /// Opens (or creates) the database under `dir/db` with the column families of `states`
    /// (in state-id order; each named [`column_family_name`] of its position) and resolves
    /// their handles.
    pub(crate) fn open(
        options: &Options,
        dir: tempfile::TempDir,
        states: &[StoredState],
    ) -> Result<Self> {
        let path = OpenDb::db_path(dir.path());
        let existing = if path.join("CURRENT").exists() {
            Db::list_cf(options, &path).map_err(engine("listing column families"))?
        } else {
            vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]
        };
        for (i, state) in states.iter().enumerate() {
            if state.column_family != column_family_name(StateId(i as u32))
                || !existing.contains(&state.column_family)
            {
                return Err(RocksDbError::Metadata {
                    detail: format!(
                        "state '{}' (#{i}) names column family '{}', which the database does not hold under that position",
                        state.metadata.name, state.column_family
                    ),
                }
                .into());
            }
        }
        let descriptors = existing
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, options.clone()));
        let db = Db::open_cf_descriptors(options, &path, descriptors)
            .map_err(engine("opening the instance database"))?;
        DbCell::try_new(
            Arc::new(OpenDb { db, dir }),
            |open| -> Result<CfTable<'_>> {
                let table = states
                    .iter()
                    .map(|state| {
                        let handle = open
                            .db
                            .cf_handle(&state.column_family)
                            .ok_or_else(|| missing_column_family(&state.column_family))?;
                        Ok(StateCf {
                            handle,
                            kind: state.metadata.kind,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(RwLock::new(table))
            },
        )
    }
}

/// The error for a column family that stored metadata names but the database lacks.
pub(crate) fn missing_column_family(name: &str) -> Error {
    RocksDbError::Metadata {
        detail: format!("column family '{name}' is missing"),
    }
    .into()
}

/// Opens the database of a RocksDB checkpoint at `path` read-only, with every column family.
pub(crate) fn open_read_only(options: &Options, path: &Path) -> Result<DB> {
    let cfs =
        DB::list_cf(options, path).map_err(engine("listing column families of a checkpoint"))?;
    let descriptors = cfs
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(name, options.clone()));
    DB::open_cf_descriptors_read_only(options, path, descriptors, false)
        .map_err(engine("opening a checkpoint read-only"))
}

/// Read options of a scan over `[lower, upper)`. A scan reads each block once: it stays out
/// of the block cache.
pub(crate) fn scan_options(lower: Vec<u8>, upper: Vec<u8>) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(lower);
    ro.set_iterate_upper_bound(upper);
    ro.fill_cache(false);
    ro
}
