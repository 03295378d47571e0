//! End-to-end tests: session_limits.
