//! [`BackendConfig`]: which state backend a job uses, from a string or a serde config.
//!
//! The string form is what a command line or an environment variable carries:
//!
//! | string | backend |
//! |---|---|
//! | `heap` | in memory (dashmap) |
//! | `rocksdb`, `rocksdb:dir=/var/lib/job,memory=512MiB` | RocksDB; instance directories under `dir`, block cache + write buffers within `memory` |
//! | `lmdb`, `lmdb:dir=/var/lib/job,map-size=4GiB` | LMDB; environments under `dir`, initial map size |
//!
//! A `dir` containing `,` or `=` cannot be written in the string form: use the serde form.
//! Sizes take `B`, `KiB`, `MiB`, `GiB` (or `K`, `M`, `G`, powers of 1024) or a plain byte
//! count. Without `dir`, working directories go under the system temporary directory (each
//! backend's own directory is removed when the backend is dropped).
//!
//! The serde form is internally tagged: `{"backend": "rocksdb", "dir": "/x", "memory_bytes":
//! 536870912}`. A backend whose cargo feature is off parses, and [`BackendConfig::build`]
//! says which feature to enable.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::factory::DynStateBackendFactory;

/// Which backend a job's operators keep their keyed state in, and its few settings an
/// operator of the job is expected to choose.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum BackendConfig {
    /// In memory.
    #[default]
    Heap,
    /// RocksDB.
    #[serde(rename = "rocksdb")]
    RocksDb {
        /// Base directory of the instance directories (default: system temp dir).
        #[serde(default)]
        dir: Option<PathBuf>,
        /// Memory budget of the block cache and write buffers, shared by every backend this
        /// factory creates (default: the backend's default, 256 MiB).
        #[serde(default)]
        memory_bytes: Option<u64>,
    },
    /// LMDB.
    Lmdb {
        /// Base directory of the environments (default: system temp dir).
        #[serde(default)]
        dir: Option<PathBuf>,
        /// Initial map size; the map doubles when full (default: the backend's, 256 MiB).
        #[serde(default)]
        map_size: Option<u64>,
    },
}

impl BackendConfig {
    /// The backend's short name, as factories report it.
    pub fn name(&self) -> &'static str {
        match self {
            BackendConfig::Heap => "heap",
            BackendConfig::RocksDb { .. } => "rocksdb",
            BackendConfig::Lmdb { .. } => "lmdb",
        }
    }

    /// The factory of the configured backend.
    pub fn build(&self) -> Result<Box<dyn DynStateBackendFactory>> {
        match self {
            BackendConfig::Heap => build_heap(),
            BackendConfig::RocksDb { dir, memory_bytes } => build_rocksdb(dir, *memory_bytes),
            BackendConfig::Lmdb { dir, map_size } => build_lmdb(dir, *map_size),
        }
    }
}

#[cfg(any(feature = "rocksdb", feature = "lmdb"))]
fn default_dir(dir: &Option<PathBuf>, backend: &str) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("flowstate-{backend}")))
}

#[cfg(feature = "heap")]
fn build_heap() -> Result<Box<dyn DynStateBackendFactory>> {
    Ok(Box::new(flowstate_heap::HeapBackendFactory::default()))
}

#[cfg(not(feature = "heap"))]
fn build_heap() -> Result<Box<dyn DynStateBackendFactory>> {
    Err(Error::BackendNotCompiled {
        backend: "heap",
        feature: "heap",
    })
}

#[cfg(feature = "rocksdb")]
fn build_rocksdb(
    dir: &Option<PathBuf>,
    memory_bytes: Option<u64>,
) -> Result<Box<dyn DynStateBackendFactory>> {
    use flowstate_rocksdb::{RocksDbBackendFactory, RocksDbConfig, RocksDbResources};
    let dir = default_dir(dir, "rocksdb");
    let factory = match memory_bytes {
        None => RocksDbBackendFactory::with_shared_resources(dir)?,
        Some(bytes) => {
            let config = RocksDbConfig {
                memory_bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
                ..RocksDbConfig::default()
            };
            let resources = std::sync::Arc::new(RocksDbResources::new(config)?);
            RocksDbBackendFactory::new(dir, resources)?
        }
    };
    Ok(Box::new(factory))
}

#[cfg(not(feature = "rocksdb"))]
fn build_rocksdb(
    _dir: &Option<PathBuf>,
    _memory_bytes: Option<u64>,
) -> Result<Box<dyn DynStateBackendFactory>> {
    Err(Error::BackendNotCompiled {
        backend: "rocksdb",
        feature: "rocksdb",
    })
}

#[cfg(feature = "lmdb")]
fn build_lmdb(
    dir: &Option<PathBuf>,
    map_size: Option<u64>,
) -> Result<Box<dyn DynStateBackendFactory>> {
    use flowstate_lmdb::{LmdbBackendFactory, LmdbConfig};
    let mut config = LmdbConfig::default();
    if let Some(size) = map_size {
        config.initial_map_size = usize::try_from(size).unwrap_or(usize::MAX);
    }
    config.validate().map_err(flowstate_api::Error::from)?;
    Ok(Box::new(LmdbBackendFactory::new(
        default_dir(dir, "lmdb"),
        config,
    )))
}

#[cfg(not(feature = "lmdb"))]
fn build_lmdb(
    _dir: &Option<PathBuf>,
    _map_size: Option<u64>,
) -> Result<Box<dyn DynStateBackendFactory>> {
    Err(Error::BackendNotCompiled {
        backend: "lmdb",
        feature: "lmdb",
    })
}

impl FromStr for BackendConfig {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidBackendConfig {
            input: input.to_string(),
            reason,
        };
        let (name, options) = match input.trim().split_once(':') {
            Some((name, options)) => (name, options),
            None => (input.trim(), ""),
        };
        let mut dir = None;
        let mut size = None;
        let size_key = match name {
            "heap" => None,
            "rocksdb" => Some("memory"),
            "lmdb" => Some("map-size"),
            other => {
                return Err(invalid(format!(
                    "unknown backend '{other}': choose heap, rocksdb or lmdb"
                )))
            }
        };
        for option in options.split(',').filter(|o| !o.trim().is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| invalid(format!("option '{option}' is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(invalid(format!("option '{key}' has no value")));
            }
            match (key, size_key) {
                ("dir", Some(_)) => dir = Some(PathBuf::from(value)),
                (key, Some(expected)) if key == expected => {
                    size = Some(parse_size(value).map_err(invalid)?)
                }
                _ => {
                    let known = match size_key {
                        Some(size_key) => format!("dir, {size_key}"),
                        None => "none".to_string(),
                    };
                    return Err(invalid(format!(
                        "unknown option '{key}' for {name} (options: {known})"
                    )));
                }
            }
        }
        Ok(match name {
            "rocksdb" => BackendConfig::RocksDb {
                dir,
                memory_bytes: size,
            },
            "lmdb" => BackendConfig::Lmdb {
                dir,
                map_size: size,
            },
            _ => BackendConfig::Heap,
        })
    }
}

impl fmt::Display for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dir, size_key, size) = match self {
            BackendConfig::Heap => return f.write_str("heap"),
            BackendConfig::RocksDb { dir, memory_bytes } => (dir, "memory", memory_bytes),
            BackendConfig::Lmdb { dir, map_size } => (dir, "map-size", map_size),
        };
        f.write_str(self.name())?;
        let mut options = Vec::new();
        if let Some(dir) = dir {
            options.push(format!("dir={}", dir.display()));
        }
        if let Some(size) = size {
            options.push(format!("{size_key}={size}"));
        }
        if !options.is_empty() {
            write!(f, ":{}", options.join(","))?;
        }
        Ok(())
    }
}

/// `512MiB`, `4G`, `1048576`: a byte count.
pub fn parse_size(value: &str) -> std::result::Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size '{value}' does not start with a whole number"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "KB" => 10,
        "M" | "MiB" | "MB" => 20,
        "G" | "GiB" | "GB" => 30,
        other => {
            return Err(format!(
                "size unit '{other}' is unknown: use B, KiB, MiB or GiB"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{value}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend_and_round_trips_through_display() {
        let cases = [
            ("heap", BackendConfig::Heap),
            (
                "rocksdb",
                BackendConfig::RocksDb {
                    dir: None,
                    memory_bytes: None,
                },
            ),
            (
                "rocksdb:dir=/var/lib/x,memory=512MiB",
                BackendConfig::RocksDb {
                    dir: Some("/var/lib/x".into()),
                    memory_bytes: Some(512 << 20),
                },
            ),
            (
                "lmdb:map-size=4G",
                BackendConfig::Lmdb {
                    dir: None,
                    map_size: Some(4 << 30),
                },
            ),
        ];
        for (text, expected) in cases {
            let parsed: BackendConfig = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            let again: BackendConfig = parsed.to_string().parse().unwrap();
            assert_eq!(again, expected, "{text} displayed as {parsed}");
        }
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        for (text, needle) in [
            ("cassandra", "unknown backend 'cassandra'"),
            ("heap:dir=/x", "unknown option 'dir' for heap"),
            ("rocksdb:memory", "is not key=value"),
            ("rocksdb:dir=", "option 'dir' has no value"),
            ("rocksdb:memory=12 parsecs", "size unit 'parsecs'"),
            (
                "lmdb:memory=1G",
                "unknown option 'memory' for lmdb (options: dir, map-size)",
            ),
            ("lmdb:map-size=99999999999999G", "too large"),
        ] {
            let err = text.parse::<BackendConfig>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn serde_form_is_tagged_and_strict() {
        let config: BackendConfig =
            serde_json::from_str(r#"{"backend":"lmdb","dir":"/d","map_size":1024}"#).unwrap();
        assert_eq!(
            config,
            BackendConfig::Lmdb {
                dir: Some("/d".into()),
                map_size: Some(1024)
            }
        );
        // A misspelt option is an error, not silently the default.
        assert!(
            serde_json::from_str::<BackendConfig>(r#"{"backend":"lmdb","dirr":"/d"}"#).is_err()
        );
        assert_eq!(
            serde_json::to_string(&BackendConfig::Heap).unwrap(),
            r#"{"backend":"heap"}"#
        );
    }
}
