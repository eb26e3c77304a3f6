//! The API every descriptor and every handle has, written once as macros because the types
//! differ in their generic parameters and extra fields. Paths are absolute (`$crate::…`) so an
//! expansion does not depend on the imports of the file that invokes it.

/// Namespace builders, the value codec builder and the name accessor, the same for every
/// descriptor. `$gen` are the descriptor's type parameters before the namespace; `$field` its
/// fields besides `common`.
macro_rules! descriptor_namespaces {
    ($ty:ident [$($gen:ident),*] { $($field:ident),* }) => {
        impl<$($gen,)* N> $ty<$($gen,)* N> {
            /// Uses namespaces of type `M`, encoded with the default serde codec.
            pub fn with_namespace<
                M: ::serde::Serialize + ::serde::de::DeserializeOwned + 'static,
            >(
                self,
            ) -> $ty<$($gen,)* M> {
                self.with_namespace_codec($crate::codec::SerdeCodec::<M>::new())
            }
            /// Uses namespaces of type `M`, encoded with `codec`.
            pub fn with_namespace_codec<M>(
                self,
                codec: impl $crate::codec::Codec<M> + 'static,
            ) -> $ty<$($gen,)* M> {
                $ty {
                    common: self.common.with_namespace_codec(codec),
                    $($field: self.$field,)*
                }
            }
            /// Stores values with `codec` instead of the default.
            pub fn with_value_codec(
                mut self,
                codec: impl $crate::codec::Codec<
                        <Self as $crate::typed::DescriptorValue>::Stored,
                    > + 'static,
            ) -> Self {
                self.common.value_codec = ::std::sync::Arc::new(codec);
                self
            }
            /// The state's name, unique within a backend.
            pub fn name(&self) -> &str {
                &self.common.name
            }
        }
    };
}

/// Id, clear, key enumeration and `apply_to_all_keys`: the same for every handle. `$gen` are
/// the handle's type parameters before the namespace; `$field` its fields besides `inner`.
macro_rules! handle_common {
    ($ty:ident [$($gen:ident),*] { $($field:ident),* }) => {
        impl<$($gen,)* N> Clone for $ty<$($gen,)* N> {
            fn clone(&self) -> Self {
                Self { inner: self.inner.clone(), $($field: self.$field.clone(),)* }
            }
        }

        impl<$($gen,)* N> ::std::fmt::Debug for $ty<$($gen,)* N> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.inner.fmt(f)
            }
        }

        impl<$($gen,)* N> $ty<$($gen,)* N> {
            /// The backend's id of this state.
            pub fn id(&self) -> $crate::state::StateId {
                self.inner.id
            }
            /// Removes everything this state holds for (key, namespace).
            pub fn clear_in(
                &self,
                key: &$crate::state::KeyContext,
                namespace: &N,
            ) -> $crate::error::Result<()> {
                self.inner.clear(key, namespace)
            }
            /// Keys holding a non-empty entry in `namespace`: a copy, so callers may modify
            /// state while walking it.
            pub fn keys_in(
                &self,
                namespace: &N,
            ) -> $crate::error::Result<Vec<$crate::state::KeyContext>> {
                self.inner.keys(namespace)
            }
            /// Calls `f` for every key holding state in `namespace`; `f` may update or clear
            /// state (of this or any other key) while the walk goes on.
            pub fn apply_to_all_keys_in(
                &self,
                namespace: &N,
                mut f: impl FnMut(&$crate::state::KeyContext, &Self) -> $crate::error::Result<()>,
            ) -> $crate::error::Result<()> {
                for key in self.inner.keys(namespace)? {
                    f(&key, self)?;
                }
                Ok(())
            }
        }

        impl<$($gen),*> $ty<$($gen,)* $crate::codec::VoidNamespace> {
            /// Removes everything this state holds for `key`.
            pub fn clear(&self, key: &$crate::state::KeyContext) -> $crate::error::Result<()> {
                self.clear_in(key, &$crate::codec::VoidNamespace)
            }
            /// Keys holding a non-empty entry: a copy, so callers may modify state while
            /// walking it.
            pub fn keys(&self) -> $crate::error::Result<Vec<$crate::state::KeyContext>> {
                self.keys_in(&$crate::codec::VoidNamespace)
            }
            /// Calls `f` for every key holding state; `f` may update or clear state (of this
            /// or any other key) while the walk goes on.
            pub fn apply_to_all_keys(
                &self,
                f: impl FnMut(&$crate::state::KeyContext, &Self) -> $crate::error::Result<()>,
            ) -> $crate::error::Result<()> {
                self.apply_to_all_keys_in(&$crate::codec::VoidNamespace, f)
            }
        }
    };
}

// Path-based import of the macros by the sibling files (textual `#[macro_use]` order would tie
// them to the order of the `mod` lines).
pub(super) use {descriptor_namespaces, handle_common};
