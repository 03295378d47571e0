//! pm-server
