//! Ingesting another RocksDB instance's SST files as they are, through RocksDB's C API.
//!
//! RocksDB can ingest SST files written by a database (not only by `SstFileWriter`) when
//! `allow_db_generated_files` is set: the files keep their sequence numbers and are linked
//! into the target, so a restore that needs every key of an old subtask's column family reads
//! none of them. The `rocksdb` crate exposes neither that option nor the per-level file order
//! the ingestion needs, so this module calls the C API (`librocksdb-sys`, the same library the
//! crate links) on the crate's raw handles.
//!
//! RocksDB's requirements, and how they are met:
//! - The files must not overlap anything in the target column family: RocksDB checks, and
//!   refuses the whole ingestion otherwise (nothing is ingested); the caller then copies keys.
//! - For a key in several files, earlier files must hold older versions: files are passed
//!   bottom level first, and level 0 oldest first (RocksDB lists level 0 newest first).
//! - No sequence number is reassigned (`snapshot_consistency` off, no global seqno): no
//!   snapshot exists while a backend is being restored.

use std::ffi::{c_char, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, DB};

/// One SST file of a column family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LsmFile {
    pub(crate) path: PathBuf,
    pub(crate) smallest_key: Vec<u8>,
    pub(crate) largest_key: Vec<u8>,
}

/// Frees a string or buffer RocksDB allocated for us.
///
/// # Safety
/// `ptr` is null or was returned by a RocksDB C API call that hands ownership to the caller.
unsafe fn take_bytes(ptr: *mut c_char, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: RocksDB returned `len` readable bytes at `ptr`, which we own and free here.
    unsafe {
        let bytes = std::slice::from_raw_parts(ptr as *const u8, len).to_vec();
        ffi::rocksdb_free(ptr as *mut c_void);
        bytes
    }
}

/// Like [`take_bytes`] for a NUL-terminated string.
///
/// # Safety
/// As for [`take_bytes`]; the string is NUL-terminated.
unsafe fn take_string(ptr: *mut c_char) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: a NUL-terminated string we own.
    unsafe {
        let len = CStr::from_ptr(ptr).to_bytes().len();
        take_bytes(ptr, len)
    }
}

/// The SST files of `cf` in `db`, in the order DB-generated ingestion needs: bottom level
/// first, each level's files oldest first.
pub(crate) fn files_for_ingestion(db: &DB, cf: &impl AsColumnFamilyRef) -> Vec<LsmFile> {
    let mut levels: Vec<Vec<LsmFile>> = Vec::new();
    // SAFETY: `db` and `cf` are live handles borrowed for the whole call; every metadata
    // object is destroyed after its children and before its parent, as the C API requires,
    // and every returned string is freed by `take_*`.
    unsafe {
        let cf_meta = ffi::rocksdb_get_column_family_metadata_cf(db.as_raw_ptr(), cf.inner());
        if cf_meta.is_null() {
            return Vec::new();
        }
        for level in 0..ffi::rocksdb_column_family_metadata_get_level_count(cf_meta) {
            let level_meta = ffi::rocksdb_column_family_metadata_get_level_metadata(cf_meta, level);
            if level_meta.is_null() {
                continue;
            }
            let mut files = Vec::new();
            for i in 0..ffi::rocksdb_level_metadata_get_file_count(level_meta) {
                let file = ffi::rocksdb_level_metadata_get_sst_file_metadata(level_meta, i);
                if file.is_null() {
                    continue;
                }
                let directory = take_string(ffi::rocksdb_sst_file_metadata_get_directory(file));
                let name = take_string(ffi::rocksdb_sst_file_metadata_get_relative_filename(file));
                let mut len = 0usize;
                let smallest_key = take_bytes(
                    ffi::rocksdb_sst_file_metadata_get_smallestkey(file, &mut len),
                    len,
                );
                let mut len = 0usize;
                let largest_key = take_bytes(
                    ffi::rocksdb_sst_file_metadata_get_largestkey(file, &mut len),
                    len,
                );
                ffi::rocksdb_sst_file_metadata_destroy(file);
                let name = std::ffi::OsStr::from_bytes(name.strip_prefix(b"/").unwrap_or(&name));
                files.push(LsmFile {
                    path: Path::new(std::ffi::OsStr::from_bytes(&directory)).join(name),
                    smallest_key,
                    largest_key,
                });
            }
            ffi::rocksdb_level_metadata_destroy(level_meta);
            // RocksDB lists level 0 newest first; other levels do not overlap.
            files.reverse();
            levels.push(files);
        }
        ffi::rocksdb_column_family_metadata_destroy(cf_meta);
    }
    levels.into_iter().rev().flatten().collect()
}

/// Owns a `rocksdb_ingestexternalfileoptions_t`.
struct IngestOptions(*mut ffi::rocksdb_ingestexternalfileoptions_t);

impl Drop for IngestOptions {
    fn drop(&mut self) {
        // SAFETY: created by `rocksdb_ingestexternalfileoptions_create`, destroyed once.
        unsafe { ffi::rocksdb_ingestexternalfileoptions_destroy(self.0) }
    }
}

/// Ingests `files` (in [`files_for_ingestion`] order) into `cf` of `db`, keeping their
/// sequence numbers and hard-linking them (the sources stay). All or nothing: on error
/// (RocksDB's message is returned) nothing was ingested.
pub(crate) fn ingest_db_generated(
    db: &DB,
    cf: &impl AsColumnFamilyRef,
    files: &[PathBuf],
) -> Result<(), String> {
    let paths = files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a file path contains NUL: {e}"))?;
    let pointers: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    // SAFETY: the options object is created and owned here; `db`, `cf` and the path strings
    // outlive the call; `err` is either left null or set to a string we must free.
    unsafe {
        let options = IngestOptions(ffi::rocksdb_ingestexternalfileoptions_create());
        ffi::rocksdb_ingestexternalfileoptions_set_allow_db_generated_files(options.0, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_link_files(options.0, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_snapshot_consistency(options.0, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_global_seqno(options.0, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_write_global_seqno(options.0, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_blocking_flush(options.0, 0);
        let mut err: *mut c_char = std::ptr::null_mut();
        ffi::rocksdb_ingest_external_file_cf(
            db.as_raw_ptr(),
            cf.inner(),
            pointers.as_ptr(),
            pointers.len(),
            options.0,
            &mut err,
        );
        if err.is_null() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&take_string(err)).into_owned())
        }
    }
}
