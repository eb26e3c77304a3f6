//! Typed keyed state, built once on [`KeyedStateBackend`] for every backend.
//!
//! A state is created from a descriptor (name + codecs, and the fold function for reducing and
//! aggregating state) bound to a backend. Every access names the record's
//! [`KeyContext`](crate::KeyContext) (key bytes and key group computed once per record) and,
//! for states with namespaces, the namespace; the `*_in` methods take an explicit namespace,
//! the plain ones use the default ([`VoidNamespace`](crate::VoidNamespace)).
//!
//! ```
//! # use std::sync::Arc;
//! # use flowstate_api::typed::*;
//! # use flowstate_api::{KeyContext, KeyedStateBackend, SerdeCodec};
//! # fn demo(backend: Arc<dyn KeyedStateBackend>) -> flowstate_api::Result<()> {
//! let count = ValueStateDescriptor::<u64>::new("count").bind(backend.clone())?;
//! let key = KeyContext::for_key(&SerdeCodec::<String>::new(), &"alice".to_string(),
//!     backend.max_parallelism())?;
//! let n = count.get(&key)?.unwrap_or(0);
//! count.update(&key, &(n + 1))?;
//! # Ok(()) }
//! ```

// One file per state kind (its descriptor and its handle side by side), on the shared plumbing
// of `bound` and the shared API surface of `macros`. Everything public is re-exported here so
// that users name one path, `flowstate_api::typed::X`, whichever file defines X.
mod aggregating;
mod bound;
mod list;
mod macros;
mod map;
mod reducing;
mod value;

use std::sync::Arc;

use crate::backend::KeyedStateBackend;

pub use aggregating::{AggregateFunction, AggregatingState, AggregatingStateDescriptor};
pub use list::{ListState, ListStateDescriptor};
pub use map::{MapState, MapStateDescriptor};
pub use reducing::{ReduceFn, ReducingState, ReducingStateDescriptor};
pub use value::{ValueState, ValueStateDescriptor};

/// A shared, type-erased backend, as typed handles hold it.
pub type SharedBackend = Arc<dyn KeyedStateBackend>;

/// The type a descriptor stores per entry (value, list element, map value, accumulator).
pub trait DescriptorValue {
    /// The stored type, which the descriptor's value codec encodes.
    type Stored;
}
