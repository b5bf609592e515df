//! Shared by the tests that read the workspace's own source. Each test crate uses a part of it.
#![allow(dead_code)]

pub mod tokens;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
