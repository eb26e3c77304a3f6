//! Aggregating state: an accumulator per (key, namespace) that `add` folds inputs into and `get`
//! reads a result from (Flink's `AggregatingState` with its `AggregateFunction`).

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use super::bound::{Bound, Common};
use super::macros::{descriptor_namespaces, handle_common};
use super::{DescriptorValue, SharedBackend};
use crate::codec::VoidNamespace;
use crate::error::Result;
use crate::state::{KeyContext, StateKind, StateMetadata};

/// Flink's `AggregateFunction`: folds inputs into an accumulator, reads a result from it.
pub trait AggregateFunction<In, Acc, Out>: Send + Sync {
    /// A fresh accumulator, which the first `add` of a (key, namespace) starts from.
    fn create_accumulator(&self) -> Acc;
    /// Folds `value` into `accumulator` and returns the new accumulator.
    fn add(&self, value: In, accumulator: Acc) -> Acc;
    /// The result an accumulator stands for, as `get` returns it.
    fn get_result(&self, accumulator: &Acc) -> Out;
    /// Combines two accumulators into one (when namespaces are merged, e.g. session windows).
    fn merge(&self, a: Acc, b: Acc) -> Acc;
}

/// Describes an aggregating state: stores an accumulator of type `Acc` per (key, namespace).
pub struct AggregatingStateDescriptor<In, Acc, Out, N = VoidNamespace> {
    common: Common<Acc, N>,
    function: Arc<dyn AggregateFunction<In, Acc, Out>>,
}

impl<In, Acc, Out, N> DescriptorValue for AggregatingStateDescriptor<In, Acc, Out, N> {
    type Stored = Acc;
}
descriptor_namespaces!(AggregatingStateDescriptor [In, Acc, Out] { function });

impl<In, Acc: Serialize + DeserializeOwned + 'static, Out>
    AggregatingStateDescriptor<In, Acc, Out>
{
    /// A descriptor of state `name` without namespace, aggregating with `function`,
    /// accumulators encoded with the default serde codec.
    pub fn new(
        name: impl Into<String>,
        function: impl AggregateFunction<In, Acc, Out> + 'static,
    ) -> Self {
        Self {
            common: Common::new(name),
            function: Arc::new(function),
        }
    }
}

impl<In, Acc, Out, N> AggregatingStateDescriptor<In, Acc, Out, N> {
    /// The metadata the state is registered with: name, kind and codec ids (of the
    /// accumulator).
    pub fn metadata(&self) -> StateMetadata {
        self.common.metadata(StateKind::Aggregating, None)
    }
    /// Registers the state with `backend` (or checks it against the registered one).
    pub fn bind(&self, backend: SharedBackend) -> Result<AggregatingState<In, Acc, Out, N>> {
        Ok(AggregatingState {
            inner: Bound::new(backend, self.common.clone(), self.metadata())?,
            function: self.function.clone(),
        })
    }
}

/// An accumulator per (key, namespace); `add` folds inputs in, `get` reads the result.
pub struct AggregatingState<In, Acc, Out, N = VoidNamespace> {
    inner: Bound<Acc, N>,
    function: Arc<dyn AggregateFunction<In, Acc, Out>>,
}
handle_common!(AggregatingState [In, Acc, Out] { function });

impl<In, Acc, Out, N> AggregatingState<In, Acc, Out, N> {
    fn read(&self, key: &KeyContext, ns: &[u8]) -> Result<Option<Acc>> {
        self.inner.read_value(key, ns)
    }
    fn write(&self, key: &KeyContext, ns: &[u8], acc: &Acc) -> Result<()> {
        let bytes = self.inner.encode(acc)?;
        self.inner.backend.put(self.inner.id, key, ns, &bytes)
    }
    /// The result of the accumulator, or `None` when nothing was added.
    pub fn get_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<Out>> {
        let ns = self.inner.ns(namespace)?;
        Ok(self
            .read(key, &ns)?
            .map(|acc| self.function.get_result(&acc)))
    }
    /// The raw accumulator.
    pub fn accumulator_in(&self, key: &KeyContext, namespace: &N) -> Result<Option<Acc>> {
        let ns = self.inner.ns(namespace)?;
        self.read(key, &ns)
    }
    /// Folds `value` into the accumulator of (key, namespace), created first when there is
    /// none.
    pub fn add_in(&self, key: &KeyContext, namespace: &N, value: In) -> Result<()> {
        let ns = self.inner.ns(namespace)?;
        let acc = match self.read(key, &ns)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.write(key, &ns, &self.function.add(value, acc))
    }
    /// Merges the accumulators of `sources` into `target` and clears the sources.
    pub fn merge_namespaces(&self, key: &KeyContext, target: &N, sources: &[N]) -> Result<()> {
        let target_ns = self.inner.ns(target)?;
        for source in sources {
            let ns = self.inner.ns(source)?;
            if ns == target_ns {
                continue;
            }
            if let Some(acc) = self.read(key, &ns)? {
                self.inner.backend.remove(self.inner.id, key, &ns)?;
                let merged = match self.read(key, &target_ns)? {
                    Some(current) => self.function.merge(current, acc),
                    None => acc,
                };
                self.write(key, &target_ns, &merged)?;
            }
        }
        Ok(())
    }
}

impl<In, Acc, Out> AggregatingState<In, Acc, Out, VoidNamespace> {
    /// The result of `key`'s accumulator, or `None` when nothing was added.
    pub fn get(&self, key: &KeyContext) -> Result<Option<Out>> {
        self.get_in(key, &VoidNamespace)
    }
    /// Folds `value` into `key`'s accumulator, created first when there is none.
    pub fn add(&self, key: &KeyContext, value: In) -> Result<()> {
        self.add_in(key, &VoidNamespace, value)
    }
}
