//! Unit tests of the settings: layering, overrides, refusals and their texts.

use super::*;

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pm.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"0.0.0.0:9000\"\n[limits]\nmax_connections = 10\nrequests_per_second = 7\n",
    )
    .unwrap();
    let settings = Settings::load(
        Some(&file),
        env(&[
            ("PM_LIMITS_MAX_CONNECTIONS", "20"),
            ("PM_JWT_SECRET", "s3cret"),
            ("PM_DATA_DIR", "/tmp/pm"),
        ]),
        &["limits.max_connections=30".into()],
    )
    .unwrap();
    assert_eq!(settings.server.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(settings.limits.max_connections, 30);
    assert_eq!(settings.limits.requests_per_second, 7);
    assert_eq!(settings.auth.secret, "s3cret");
    assert_eq!(settings.server.data_dir, PathBuf::from("/tmp/pm"));
    assert_eq!(settings.limits.outgoing_queue, 1_024, "untouched default");
}

#[test]
fn unknown_and_malformed_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pm.toml");
    std::fs::write(&file, "[limits]\nmax_conections = 10\n").unwrap();
    let error = Settings::load(Some(&file), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("unknown field: found `max_conections`, expected `one of ")
            && error.ends_with(&format!(
                "for key \"limits.max_conections\" in {} settings file",
                file.display()
            )),
        "{error}"
    );

    let error = Settings::load(None, env(&[("PM_LIMITS_MAX_CONNECTIONS", "lots")]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(error, "PM_LIMITS_MAX_CONNECTIONS: expected a whole number");

    let error = Settings::load(None, env(&[]), &["limits.nope=1".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(error, "--set limits.nope=1: unknown setting limits.nope");

    let error = Settings::load(None, env(&[]), &["limits.max_connections=0".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(error, "limits.max_connections must be at least 1");

    let error = Settings::load(None, env(&[]), &["server.listen_backlog=0".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(error, "server.listen_backlog must be at least 1");
    let backlog = Settings::load(None, env(&[("PM_SERVER_LISTEN_BACKLOG", "512")]), &[]).unwrap();
    assert_eq!(backlog.server.listen_backlog, 512);
}

#[test]
fn changelog_retention_and_migrations_dir_reach_the_storage_config() {
    let defaults = Settings::load(None, env(&[]), &[]).unwrap().sqlite_config();
    assert!(defaults.writer.retention.keeps_everything());
    assert_eq!(defaults.migrations_dir, None);

    let migrations = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        // The SQLite migrations only: `postgres/` holds the other engine's set.
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), migrations.path().join(entry.file_name())).unwrap();
        }
    }
    let dir = migrations.path().display().to_string();
    let settings = Settings::load(
        None,
        env(&[
            ("PM_CHANGELOG_RETAIN_EVENTS", "100000"),
            ("PM_STORAGE_MIGRATIONS_DIR", &dir),
        ]),
        &[
            "changelog.retain_days=30".into(),
            "changelog.prune_interval_secs=5".into(),
        ],
    )
    .unwrap();
    let config = settings.sqlite_config();
    assert_eq!(
        config.writer.retention,
        pm_db::Retention {
            max_events: Some(100_000),
            max_age: Some(Duration::from_secs(30 * 86_400)),
            interval: Duration::from_secs(5),
        }
    );
    assert_eq!(config.migrations_dir, Some(migrations.path().to_owned()));
}

#[test]
fn the_tenant_size_limit_and_the_check_on_open_reach_the_storage_config() {
    let defaults = Settings::load(None, env(&[]), &[]).unwrap().sqlite_config();
    assert_eq!(defaults.max_tenant_bytes, None);
    assert!(!defaults.check_on_open);

    let config = Settings::load(
        None,
        env(&[("PM_STORAGE_MAX_TENANT_BYTES", "1073741824")]),
        &["storage.check_on_open=true".into()],
    )
    .unwrap()
    .sqlite_config();
    assert_eq!(config.max_tenant_bytes, Some(1 << 30));
    assert!(config.check_on_open);

    let error = Settings::load(None, env(&[]), &["storage.max_tenant_bytes=lots".into()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("storage.max_tenant_bytes"), "{error}");
}

#[test]
fn the_resume_ring_is_8_mib_by_default_and_may_be_turned_off() {
    let defaults = Settings::load(None, env(&[]), &[]).unwrap();
    assert_eq!(defaults.limits.resume_ring_bytes, 8 * 1024 * 1024);
    let from_env = Settings::load(None, env(&[("PM_LIMITS_RESUME_RING_BYTES", "0")]), &[]).unwrap();
    assert_eq!(from_env.limits.resume_ring_bytes, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pm.toml");
    std::fs::write(&file, "[limits]\nresume_ring_bytes = 65536\n").unwrap();
    let from_file = Settings::load(Some(&file), env(&[]), &[]).unwrap();
    assert_eq!(from_file.limits.resume_ring_bytes, 65_536);
    let error = Settings::load(None, env(&[]), &["limits.resume_ring_byte=1".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "--set limits.resume_ring_byte=1: unknown setting limits.resume_ring_byte"
    );
}

#[test]
fn nonsense_retention_and_migrations_dirs_are_refused() {
    let error = Settings::load(None, env(&[]), &["changelog.prune_interval_secs=0".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(error, "changelog.prune_interval_secs must be at least 1");
    let error = Settings::load(None, env(&[]), &["changelog.retain_days=99999".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "changelog.retain_days must be at most 36500 (0 keeps everything)"
    );
    let error = Settings::load(None, env(&[("PM_CHANGELOG_RETAIN_EVENTS", "-1")]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid value signed int `-1`, expected u64 for key \"changelog.retain_events\" \
         in PM_CHANGELOG_RETAIN_EVENTS"
    );
    let error = Settings::load(None, env(&[]), &["limits.request_burst=-1".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid value signed int `-1`, expected u32 for key \"limits.request_burst\" \
         in --set limits.request_burst"
    );
    let empty = tempfile::tempdir().unwrap();
    let error = Settings::load(
        None,
        env(&[]),
        &[format!("storage.migrations_dir={}", empty.path().display())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("storage.migrations_dir: invalid migrations directory ")
            && error.ends_with(": migration 20261121000001 (initial) is missing"),
        "{error}"
    );
}

#[test]
fn text_settings_are_taken_as_given_and_other_pm_variables_are_ignored() {
    // Text is never parsed: quotes, brackets, digits and spaces stay as they were given.
    let secret = " \"[0123456789]\" true ";
    let settings = Settings::load(
        None,
        env(&[
            ("PM_JWT_SECRET", secret),
            ("PM_AUTH_AUDIENCE", "12345"),
            ("PM_LOG", "debug"),
            ("PM_URL", "ws://127.0.0.1:7400/ws"),
            ("PM_TOKEN", "eyJ"),
            ("PM_CONFIG", "/nowhere.toml"),
            ("PM_CRASH_ROUNDS", "x"),
            ("PM_CRASH_SEED", "y"),
        ]),
        &["auth.issuer=true".into()],
    )
    .unwrap();
    assert_eq!(settings.auth.secret, secret);
    assert_eq!(settings.auth.audience.as_deref(), Some("12345"));
    assert_eq!(settings.auth.issuer.as_deref(), Some("true"));

    // The long name and the alias: the alias wins, and the flag over both.
    let settings = Settings::load(
        None,
        env(&[
            ("PM_SERVER_DATA_DIR", "/long"),
            ("PM_DATA_DIR", "/alias"),
            ("PM_AUTH_PUBLIC_KEY_FILE", "/long.pem"),
            ("PM_JWT_PUBLIC_KEY_FILE", "/alias.pem"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(settings.server.data_dir, PathBuf::from("/alias"));
    assert_eq!(
        settings.auth.public_key_file,
        Some(PathBuf::from("/alias.pem"))
    );
    let settings = Settings::load(
        None,
        env(&[("PM_DATA_DIR", "/alias")]),
        &["server.data_dir=/flag".into()],
    )
    .unwrap();
    assert_eq!(settings.server.data_dir, PathBuf::from("/flag"));
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pm.toml");
    let error = Settings::load(Some(&file), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            file.display()
        )
    );
    std::fs::write(&file, "[limits]\nmax_connections = \n").unwrap();
    let error = Settings::load(Some(&file), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "{}: TOML parse error at line 2, column 19",
            file.display()
        )),
        "{error}"
    );
    std::fs::write(&file, "limits = 5\n").unwrap();
    let error = Settings::load(
        Some(&file),
        env(&[("PM_LIMITS_MAX_CONNECTIONS", "20")]),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(error, "PM_LIMITS_MAX_CONNECTIONS: limits is not a section");
    std::fs::write(&file, "[limits]\nmax_connections = \"ten\"\n").unwrap();
    let error = Settings::load(Some(&file), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "invalid type: found string \"ten\", expected usize for key \
             \"limits.max_connections\" in {} settings file",
            file.display()
        )
    );
}

#[test]
fn optional_auth_settings_come_from_the_environment() {
    let settings = Settings::load(
        None,
        env(&[
            ("PM_AUTH_ISSUER", "https://id.example"),
            ("PM_JWT_ALGORITHM", "EdDSA"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(settings.auth.issuer.as_deref(), Some("https://id.example"));
    assert_eq!(settings.auth.algorithm, "EdDSA");
}

#[test]
fn allowed_origins_are_a_comma_separated_list_of_origins() {
    let settings = Settings::load(
        None,
        env(&[(
            "PM_SERVER_ALLOWED_ORIGINS",
            "https://board.example.com, http://localhost:*",
        )]),
        &[],
    )
    .unwrap();
    assert_eq!(
        settings.server.allowed_origins,
        ["https://board.example.com", "http://localhost:*"]
    );
    let error = Settings::load(
        None,
        env(&[]),
        &["server.allowed_origins=https://board.example.com/app".into()],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        "server.allowed_origins: \"https://board.example.com/app\" is not an origin \
         (scheme://host[:port], or scheme://host:* for any port; no path)"
    );
}
