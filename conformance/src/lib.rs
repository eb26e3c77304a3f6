//! # flowstate-conformance
//!
//! The contract every flowstate backend is held to, as a library: a backend (ours or yours)
//! runs the whole suite with one line in a test file:
//!
//! ```ignore
//! flowstate_conformance::conformance_tests!(my_backend::MyFactory::new());
//! ```
//!
//! The macro expands to one `#[test]` per case, grouped in modules by theme, each calling a
//! plain generic function of this crate with a fresh factory.

pub mod harness;

/// Expands to every conformance case as a `#[test]`, for the factory expression given.
/// The expression is evaluated once per case.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@expand $factory;
        );
    };
    (@expand $factory:expr; $($module:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $module {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[test]
                    fn $case() {
                        $crate::$module::$case(&$factory);
                    }
                )*
            }
        )*
    };
}
