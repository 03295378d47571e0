//! End-to-end tests: requests_auth.
