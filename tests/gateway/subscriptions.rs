//! End-to-end tests: subscriptions.
