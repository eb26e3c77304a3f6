//! The read plan: `restore_reads` lists exactly the store calls the restore driver makes
//! (recorded through the object store), in order, each asking for one range.

mod snapshot_files;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use flowstate_api::checkpoint::{CheckpointStorage, FileRef, KeyedStateHandle};
use flowstate_api::snapshot::{
    planned_reads, read_handle_infos, read_info, restore_file, restore_into, restore_reads,
    FilePart, PlannedRead, ReadPurpose, SnapshotFileInfo, HEADER_LEN,
};
use flowstate_api::{Error, KeyGroup};
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parking_lot::Mutex;
use snapshot_files::{block_on, checkpoint, max, range, RowCounter};

/// Delegates to an in-memory store and records every read: the file and the ranges of one
/// call.
#[derive(Debug, Default)]
struct RecordingStore {
    inner: InMemory,
    calls: Mutex<Vec<(String, Vec<Range<u64>>)>>,
}

impl RecordingStore {
    fn take(&self) -> Vec<(String, Vec<Range<u64>>)> {
        std::mem::take(&mut *self.calls.lock())
    }
}

impl fmt::Display for RecordingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordingStore")
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if !options.head {
            let range = match &options.range {
                Some(GetRange::Bounded(r)) => r.clone(),
                other => panic!("an unplanned read shape: {other:?}"),
            };
            self.calls.lock().push((location.to_string(), vec![range]));
        }
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.calls
            .lock()
            .push((location.to_string(), ranges.to_vec()));
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn recording_storage() -> (Arc<RecordingStore>, CheckpointStorage) {
    let store = Arc::new(RecordingStore::default());
    let storage = CheckpointStorage::new(store.clone(), "root");
    (store, storage)
}

/// The planned calls as the store sees them: the file's path under the root, and its range.
fn as_calls(planned: &[(String, PlannedRead)]) -> Vec<(String, Vec<Range<u64>>)> {
    planned
        .iter()
        .map(|(path, read)| (format!("root/{path}"), vec![read.range.clone()]))
        .collect()
}

#[test]
fn restore_reads_are_the_store_calls_the_restore_driver_makes() {
    let (store, storage) = recording_storage();
    let handles = checkpoint(&storage);
    let mut infos: BTreeMap<String, SnapshotFileInfo> = BTreeMap::new();
    for handle in &handles {
        let read = block_on(read_handle_infos(&storage, max(), handle)).unwrap();
        for (file, info) in handle.files().into_iter().zip(read) {
            infos.insert(file.path.clone(), info);
        }
    }
    let info_of = |file: &FileRef| infos.get(&file.path);
    for target in [
        range(0, 7),
        range(2, 5),
        range(6, 7),
        range(0, 1),
        range(2, 2),
    ] {
        let planned = restore_reads(&handles, &target, false, info_of).unwrap();
        // The first handle's first file is read for the max-parallelism check first.
        assert_eq!(planned[0].purpose, ReadPurpose::MaxParallelismCheck);
        assert_eq!(planned[0].file.path, "shared/canonical.fsnap");
        let planned: Vec<(String, PlannedRead)> = planned
            .into_iter()
            .map(|r| (r.file.path.clone(), r.read))
            .collect();
        store.take();
        let backend = RowCounter::new(target);
        block_on(restore_into(&backend, &storage, &handles)).unwrap();
        let made = store.take();
        assert_eq!(made, as_calls(&planned), "restoring {target}");
        // Every call asks for one range: no store coalesces header and trailer into a
        // download of the file between them.
        assert!(made.iter().all(|(_, ranges)| ranges.len() == 1));
        for (path, read) in &planned {
            if read.part == FilePart::Header {
                assert_eq!(read.range, 0..HEADER_LEN, "{path}");
            }
        }
        // Blocks are read only of the key groups restored, and all of them are restored.
        let blocks: Vec<(u32, u32)> = planned
            .iter()
            .filter_map(|(_, r)| r.key_groups)
            .map(|(a, b)| (a.get(), b.get()))
            .collect();
        assert!(
            blocks
                .iter()
                .all(|(a, b)| target.contains(KeyGroup::new(*a, max()).unwrap())
                    && target.contains(KeyGroup::new(*b, max()).unwrap())),
            "{target}: {blocks:?}"
        );
        let restored: Vec<u32> = backend.rows.lock().keys().copied().collect();
        let expected: Vec<u32> = [0, 1, 3, 4, 5, 6, 7]
            .into_iter()
            .filter(|g| target.contains(KeyGroup::new(*g, max()).unwrap()))
            .collect();
        assert_eq!(restored, expected, "{target}");
    }
}

#[test]
fn planned_reads_of_one_file_are_what_restore_file_reads() {
    let (store, storage) = recording_storage();
    let handles = checkpoint(&storage);
    let file = handles[1].files()[0].clone();
    let info = block_on(read_info(&storage, &file)).unwrap();
    assert_eq!(
        info.blocks_end(),
        info.index.last().map(|e| e.offset + e.length).unwrap()
    );
    for target in [range(5, 6), range(0, 3)] {
        let planned = planned_reads(&file, &info, &target).unwrap();
        let parts: Vec<FilePart> = planned.iter().map(|r| r.part).collect();
        let mut expected = vec![
            FilePart::Header,
            FilePart::Trailer,
            FilePart::MetadataAndIndex,
        ];
        if target.intersection(&range(4, 7)).is_some() {
            expected.push(FilePart::Blocks);
        }
        assert_eq!(parts, expected, "{target}");
        store.take();
        block_on(restore_file(&RowCounter::new(target), &storage, &file)).unwrap();
        let planned: Vec<_> = planned
            .into_iter()
            .map(|r| (file.path.clone(), r))
            .collect();
        assert_eq!(store.take(), as_calls(&planned), "{target}");
    }
}

#[test]
fn restore_reads_refuse_native_handles_as_the_restore_does() {
    let storage = CheckpointStorage::in_memory();
    let native = KeyedStateHandle::Native {
        backend: "rocksdb".into(),
        key_group_range: range(0, 7),
        max_parallelism: max(),
        files: Vec::new(),
        metadata: serde_json::Value::Null,
    };
    let handles = vec![native];
    let none = |_: &FileRef| None::<&SnapshotFileInfo>;
    assert!(matches!(
        restore_reads(&handles, &range(0, 7), false, none),
        Err(Error::UnsupportedHandle { .. })
    ));
    assert!(matches!(
        block_on(restore_into(
            &RowCounter::new(range(0, 7)),
            &storage,
            &handles
        )),
        Err(Error::UnsupportedHandle { .. })
    ));
    assert_eq!(
        restore_reads(&handles, &range(0, 7), true, none).unwrap(),
        Vec::new()
    );
}
