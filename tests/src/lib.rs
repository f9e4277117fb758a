//! Integration tests of tierswarm. The scripted harness they run on is the public
//! [`tierswarm_harness`] crate (so that users can script and snapshot their own scenarios with
//! it); it is re-exported here so the tests name it as before.

pub use tierswarm_harness::*;
