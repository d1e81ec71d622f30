//! Helpers shared by the multi-node tests: the testkit's, under the names the tests use.
#![allow(unused_imports, unreachable_pub)]

pub use tribes_testkit::channel::{converge, static_cluster, static_node as node, test_key};
pub use tribes_testkit::{eventually, free_addrs, init_tracing};
