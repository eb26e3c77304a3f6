//! Checkpoint storage against a real S3-compatible server (moto, started by
//! `scripts/test.sh`, which exports `FLOWSTATE_S3_ENDPOINT` and creates bucket
//! `flowstate-test`). Without the variable the tests are skipped, except in CI (`CI` set),
//! where a missing server is a failure.

mod support;

use bytes::Bytes;
use flowstate_api::checkpoint::SubtaskStateHandle;
use flowstate_api::{
    CheckpointId, CheckpointManifest, CheckpointStorage, MaxParallelism, Parallelism,
};

fn s3_storage() -> Option<CheckpointStorage> {
    let Ok(endpoint) = std::env::var("FLOWSTATE_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the S3 tests: run them through scripts/test.sh, which starts moto"
        );
        eprintln!("FLOWSTATE_S3_ENDPOINT is not set: skipping the S3 test");
        return None;
    };
    let prefix = format!(
        "s3://flowstate-test/api-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let options = [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true".to_string()),
        ("aws_access_key_id", "test".to_string()),
        ("aws_secret_access_key", "test".to_string()),
        ("aws_region", "us-east-1".to_string()),
    ];
    Some(CheckpointStorage::from_url(&prefix, options).expect("s3 storage from URL"))
}

#[test]
fn checkpoint_storage_on_s3() {
    let Some(storage) = s3_storage() else { return };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let id = CheckpointId(3);
            let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
            let file = storage
                .put(
                    &CheckpointStorage::shared_path("blob"),
                    Bytes::from(data.clone()),
                    true,
                )
                .await
                .unwrap();
            assert_eq!(file.size, 40_000);
            let range = storage.get_range(&file.path, 400..800).await.unwrap();
            assert_eq!(range.as_ref(), &data[400..800]);
            assert!(storage.list_checkpoints().await.unwrap().is_empty());
            let max = MaxParallelism::new(128).unwrap();
            let manifest = CheckpointManifest::new(
                id,
                max,
                Parallelism::new(1).unwrap(),
                vec![SubtaskStateHandle {
                    subtask_index: 0,
                    key_group_range: max.full_range(),
                    keyed: None,
                    operator: Some(file.clone()),
                }],
            );
            storage.write_manifest(&manifest).await.unwrap();
            assert_eq!(storage.list_checkpoints().await.unwrap(), vec![id]);
            assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
            // Manifests are create-only: another manifest for the id is refused, the same
            // one again (a retried write) is fine.
            storage.write_manifest(&manifest).await.unwrap();
            let mut other = manifest.clone();
            other.subtasks[0].operator = None;
            assert!(matches!(
                storage.write_manifest(&other).await,
                Err(flowstate_api::Error::CheckpointState {
                    state: "already published",
                    ..
                })
            ));
            assert_eq!(storage.read_manifest(id).await.unwrap(), manifest);
            let listed = storage.list("shared").await.unwrap();
            assert_eq!(listed, vec![(file.path.clone(), 40_000)]);
            storage.delete(&file.path).await.unwrap();
            assert_eq!(storage.size_of(&file.path).await.unwrap(), None);
        });
}

/// The second of two lifecycles on one S3 prefix fences the first (conditional puts).
#[test]
fn a_second_lifecycle_fences_the_first_on_s3() {
    let Some(storage) = s3_storage() else { return };
    support::block_on(support::two_lifecycles_on_one_root(storage));
}
