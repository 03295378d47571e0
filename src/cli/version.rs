//! Which build this is.

/// The build stamp: package version and git commit (see `build.rs`), as `--version`,
/// `Welcome.server_version` and the protocol client's name report it.
pub const BUILD_VERSION: &str = env!("PM_BUILD_VERSION");
