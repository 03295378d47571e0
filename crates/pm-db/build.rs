//! Compiles the storage suite against PostgreSQL (`tests/storage_postgres`) only when
//! `PM_TEST_POSTGRES_URL` names a server to run it on; without it, that test binary says so.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_suite)");
    println!("cargo::rerun-if-env-changed=PM_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("PM_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres_suite");
    }
}
