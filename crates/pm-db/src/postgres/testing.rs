//! A PostgreSQL database of its own for a test (feature `test-util`): `pm_test_<random>` on
//! the server a test names, created at once and dropped (`WITH (FORCE)`, ending the
//! connections still open to it) when the value is dropped. Tests that share one server
//! never see each other's tenants.

use futures::future::BoxFuture;
use sqlx::{Connection, PgConnection};

/// A database created for one test, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database on the server of `admin_url` (a URL whose user may create
    /// databases, e.g. `postgres://postgres@127.0.0.1:5432/test`).
    pub fn create(admin_url: &str) -> sqlx::Result<TestDatabase> {
        let name = format!("pm_test_{}", uuid::Uuid::new_v4().simple());
        let (url, create) = (admin_url.to_owned(), format!(r#"CREATE DATABASE "{name}""#));
        blocking(move || {
            Box::pin(async move {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(&create).execute(&mut conn).await?;
                conn.close().await
            })
        })?;
        Ok(TestDatabase {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// The URL of the database.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let drop_sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
        let dropped = blocking(move || {
            Box::pin(async move {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(&drop_sql).execute(&mut conn).await?;
                conn.close().await
            })
        });
        if let Err(error) = dropped {
            // No panic here: the test may already be unwinding.
            eprintln!("dropping test database {}: {error}", self.name);
        }
    }
}

/// Runs `work` on a runtime of its own, in a thread: databases are made and dropped inside
/// tests' runtimes, which must not block on themselves.
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> BoxFuture<'static, sqlx::Result<T>> + Send + 'static,
) -> sqlx::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work())
    })
    .join()
    .expect("the setup thread does not panic")
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (url, params) = url
        .split_once('?')
        .map_or((url, None), |(u, p)| (u, Some(p)));
    let authority = url.find("://").map_or(0, |i| i + 3);
    let base = match url[authority..].find('/') {
        Some(slash) => &url[..authority + slash],
        None => url,
    };
    match params {
        Some(params) => format!("{base}/{name}?{params}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
