//! Process-wide RocksDB resources: one block cache and one write-buffer manager shared by every
//! backend of the process, and the options every backend opens its database with.

use std::sync::{Arc, OnceLock};

use flowstate_api::{Error, Result};
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, LogLevel, MergeOperands, Options, ReadOptions,
    WriteBufferManager, WriteOptions,
};

/// Name of the list-append merge operator (RocksDB checks it when reopening a database).
pub const LIST_APPEND_MERGE_OPERATOR: &str = "flowstate.list_append";

/// Memory and tuning settings of the RocksDB backend. Memory is one budget per process: the
/// block cache is `memory_bytes` large and the memtables of all backends are charged to it
/// through the write-buffer manager, so RocksDB's native memory stays near `memory_bytes`
/// however many backends (and column families) the process runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RocksDbConfig {
    /// Total budget for block cache plus memtables, in bytes. Default 256 MiB.
    pub memory_bytes: usize,
    /// Share of `memory_bytes` the memtables of all backends may use before RocksDB flushes
    /// them. Default 0.5 (Flink's default write-buffer ratio).
    pub write_buffer_ratio: f64,
    /// Size of one column family's memtable before it is flushed. Default 32 MiB.
    pub write_buffer_size: usize,
    /// Background flush and compaction threads per database. Default 2.
    pub max_background_jobs: i32,
    /// Uncompressed size of an SST data block. Default 4 KiB (point lookups dominate).
    pub block_size: usize,
    /// Bloom filter bits per key; 0 disables the filter. Default 10 (about 1% false positives).
    pub bloom_bits_per_key: f64,
    /// Compress SST blocks with LZ4. Default true.
    pub compression: bool,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            write_buffer_ratio: 0.5,
            write_buffer_size: 32 << 20,
            max_background_jobs: 2,
            block_size: 4 << 10,
            bloom_bits_per_key: 10.0,
            compression: true,
        }
    }
}

impl RocksDbConfig {
    /// Checks the values: a bad configuration is reported at startup, not as odd behaviour.
    pub fn validate(&self) -> Result<()> {
        if self.memory_bytes < (8 << 20) {
            return Err(Error::Config(format!(
                "rocksdb memory_bytes is {} but must be at least 8 MiB",
                self.memory_bytes
            )));
        }
        if !(self.write_buffer_ratio > 0.0 && self.write_buffer_ratio < 1.0) {
            return Err(Error::Config(format!(
                "rocksdb write_buffer_ratio is {} but must be strictly between 0 and 1",
                self.write_buffer_ratio
            )));
        }
        if self.write_buffer_size < (64 << 10) {
            return Err(Error::Config(format!(
                "rocksdb write_buffer_size is {} but must be at least 64 KiB",
                self.write_buffer_size
            )));
        }
        if self.max_background_jobs < 1 {
            return Err(Error::Config(
                "rocksdb max_background_jobs must be at least 1".into(),
            ));
        }
        if self.block_size < 512 {
            return Err(Error::Config(
                "rocksdb block_size must be at least 512 bytes".into(),
            ));
        }
        if self.bloom_bits_per_key.is_nan() || self.bloom_bits_per_key < 0.0 {
            return Err(Error::Config(
                "rocksdb bloom_bits_per_key must be 0 or more".into(),
            ));
        }
        Ok(())
    }
}

/// The memory every backend of a process shares: create one (or use [`RocksDbResources::shared`])
/// and hand it to every [`crate::RocksDbBackendFactory`].
pub struct RocksDbResources {
    config: RocksDbConfig,
    cache: Cache,
    write_buffer_manager: WriteBufferManager,
}

impl std::fmt::Debug for RocksDbResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbResources")
            .field("config", &self.config)
            .field("block_cache_usage", &self.block_cache_usage())
            .field("write_buffer_usage", &self.write_buffer_usage())
            .finish()
    }
}

static SHARED: OnceLock<Arc<RocksDbResources>> = OnceLock::new();

impl RocksDbResources {
    /// Creates a block cache and a write-buffer manager charged to it.
    pub fn new(config: RocksDbConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config))
    }

    /// The process-wide resources with the default configuration, created on first use.
    pub fn shared() -> Arc<RocksDbResources> {
        SHARED
            .get_or_init(|| Arc::new(Self::build(RocksDbConfig::default())))
            .clone()
    }

    fn build(config: RocksDbConfig) -> Self {
        let cache = Cache::new_lru_cache(config.memory_bytes);
        let write_buffer_bytes = (config.memory_bytes as f64 * config.write_buffer_ratio) as usize;
        // Charging memtables to the cache keeps one limit for both; no stall: a full budget
        // triggers flushes rather than blocking the task thread.
        let write_buffer_manager = WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffer_bytes,
            false,
            cache.clone(),
        );
        Self {
            config,
            cache,
            write_buffer_manager,
        }
    }

    /// The configuration these resources were built from.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    /// Bytes held by the shared block cache, memtable reservations included.
    pub fn block_cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes of memtables across every backend sharing these resources.
    pub fn write_buffer_usage(&self) -> usize {
        self.write_buffer_manager.get_usage()
    }

    /// The options every database and column family of the backend uses: shared cache and
    /// write-buffer manager, the list-append merge operator, bloom filters, LZ4, atomic flush.
    /// A benchmark of raw RocksDB uses the same options to compare like with like.
    pub fn db_options(&self) -> Options {
        let c = &self.config;
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_block_size(c.block_size);
        // Index and filter blocks count against the same budget as data blocks.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        if c.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(c.bloom_bits_per_key, false);
        }

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The WAL is off (checkpoints give durability); atomic flush keeps column families
        // consistent with each other at every flush, as RocksDB requires without a WAL.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(c.max_background_jobs);
        opts.set_write_buffer_manager(&self.write_buffer_manager);
        opts.set_write_buffer_size(c.write_buffer_size);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(if c.compression {
            DBCompressionType::Lz4
        } else {
            DBCompressionType::None
        });
        opts.set_level_compaction_dynamic_level_bytes(true);
        opts.set_merge_operator_associative(LIST_APPEND_MERGE_OPERATOR, list_append_merge);
        opts.set_log_level(LogLevel::Warn);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts
    }
}

/// Write options of state access: no WAL, no sync (see the crate docs: durability comes from
/// checkpoints, and a backend is never reopened from its local files after a crash).
pub fn write_options() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

/// Read options of point lookups.
pub fn read_options() -> ReadOptions {
    ReadOptions::default()
}

/// The list merge operator: list values are [`flowstate_api::list_encoding`] bytes, where
/// concatenation is append, so a merge is a concatenation (full and partial merges alike).
fn list_append_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(existing) = existing {
        out.extend_from_slice(existing);
    }
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(RocksDbConfig::default().validate().is_ok());
        let bad = [
            RocksDbConfig {
                memory_bytes: 1,
                ..Default::default()
            },
            RocksDbConfig {
                write_buffer_ratio: 1.0,
                ..Default::default()
            },
            RocksDbConfig {
                write_buffer_ratio: f64::NAN,
                ..Default::default()
            },
            RocksDbConfig {
                max_background_jobs: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(matches!(
                RocksDbResources::new(config),
                Err(Error::Config(_))
            ));
        }
    }
}
