//! Postgres storage for the registry (tables `schema_registry_*` of `sql/0001_schema.sql`).
//!
//! Writers to one subject serialise on that subject's row in `schema_registry_subjects`, so
//! version numbers stay dense and a compatibility check always sees the versions it is checked
//! against. Schema ids are shared across subjects and deduplicated by the unique fingerprint, so
//! two concurrent registrations of one new schema get one id whichever subjects they target.

use sqlx::{PgConnection, PgPool};

use super::RegistryError;
use super::compatibility::{self, CompatibilityLevel, PreviousVersion};
use super::http::VersionSelector;
use super::schema::ParsedSchema;

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The global schema id.
    pub id: i32,
    /// The subject's version holding the schema.
    pub version: i32,
    /// Whether this call created the version (false: it was registered already).
    pub created: bool,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number within the subject.
    pub version: i32,
    /// The global schema id.
    pub id: i32,
    /// The schema text as first registered.
    pub schema: String,
    /// Whether the version is soft-deleted.
    pub deleted: bool,
}

/// The registry's tables behind a connection pool.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    pool: PgPool,
}

type VersionRow = (i32, i32, String, bool);

impl RegistryStore {
    /// Wraps a pool whose database has been migrated with `sql/`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for callers that share it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers `schema` under `subject`, or returns its existing version if it is live there.
    ///
    /// A schema already known under any subject keeps its id; a new one is checked against the
    /// subject's effective compatibility level first and refused with
    /// [`RegistryError::Incompatible`] when it breaks it.
    pub async fn register(
        &self,
        subject: &str,
        schema: &ParsedSchema,
    ) -> Result<Registration, RegistryError> {
        // Re-registration is what every producer does on start: answer it without a write.
        if let Some(found) =
            live_version_of(&mut *self.pool.acquire().await?, subject, schema).await?
        {
            return Ok(found);
        }

        let mut tx = self.pool.begin().await?;
        lock_subject(&mut tx, subject, true).await?;
        if let Some(found) = live_version_of(&mut tx, subject, schema).await? {
            return Ok(found);
        }

        let level = effective_level(&mut tx, subject).await?;
        let messages = check_against_live(&mut tx, subject, schema, level, None).await?;
        if !messages.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                messages,
            });
        }

        let id = schema_id_for(&mut tx, schema).await?;
        let (version,): (i32,) = sqlx::query_as(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM schema_registry_subject_versions \
             WHERE subject = $1",
        )
        .bind(subject)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO schema_registry_subject_versions (subject, version, schema_id) \
             VALUES ($1, $2, $3)",
        )
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(subject, id, version, "schema registered");
        Ok(Registration {
            id,
            version,
            created: true,
        })
    }

    /// Finds the version of `subject` holding `schema` (`POST /subjects/{subject}`).
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &ParsedSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let row: Option<VersionRow> = sqlx::query_as(
            "SELECT v.version, v.schema_id, s.schema_text, v.deleted \
             FROM schema_registry_subject_versions v \
             JOIN schema_registry_schemas s ON s.id = v.schema_id \
             WHERE v.subject = $1 AND s.fingerprint = $2 AND ($3 OR NOT v.deleted) \
             ORDER BY v.deleted, v.version DESC LIMIT 1",
        )
        .bind(subject)
        .bind(&schema.fingerprint()[..])
        .bind(include_deleted)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(subject_version(subject, row)),
            None if self.subject_exists(subject, include_deleted).await? => {
                Err(RegistryError::SchemaNotFound(None))
            }
            None => Err(RegistryError::SubjectNotFound(subject.to_owned())),
        }
    }

    /// Subjects with live versions (or any versions), optionally only those starting with
    /// `prefix`, sorted.
    pub async fn subjects(
        &self,
        include_deleted: bool,
        prefix: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT subject FROM schema_registry_subject_versions \
             WHERE ($1 OR NOT deleted) AND starts_with(subject, $2) ORDER BY subject",
        )
        .bind(include_deleted)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// The version numbers of `subject`, ascending.
    pub async fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let rows: Vec<(i32,)> = sqlx::query_as(
            "SELECT version FROM schema_registry_subject_versions \
             WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
        )
        .bind(subject)
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// One version of `subject`.
    pub async fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        include_deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let number = match selector {
            VersionSelector::Latest => None,
            VersionSelector::Number(n) => Some(n),
        };
        let row: Option<VersionRow> = sqlx::query_as(
            "SELECT v.version, v.schema_id, s.schema_text, v.deleted \
             FROM schema_registry_subject_versions v \
             JOIN schema_registry_schemas s ON s.id = v.schema_id \
             WHERE v.subject = $1 AND ($2 OR NOT v.deleted) \
               AND ($3::integer IS NULL OR v.version = $3) \
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(subject)
        .bind(include_deleted)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(subject_version(subject, row)),
            None if self.subject_exists(subject, include_deleted).await? => {
                Err(RegistryError::VersionNotFound {
                    subject: subject.to_owned(),
                    version: selector.to_string(),
                })
            }
            None => Err(RegistryError::SubjectNotFound(subject.to_owned())),
        }
    }

    /// The schema text registered under `id`. Ids outlive deletions of the versions using them.
    pub async fn schema_by_id(&self, id: i32) -> Result<String, RegistryError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT schema_text FROM schema_registry_schemas WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(text,)| text)
            .ok_or(RegistryError::SchemaNotFound(Some(id.into())))
    }

    /// The `(subject, version)` pairs using schema `id`, sorted.
    pub async fn versions_of_id(
        &self,
        id: i32,
        include_deleted: bool,
    ) -> Result<Vec<(String, i32)>, RegistryError> {
        self.schema_by_id(id).await?;
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT subject, version FROM schema_registry_subject_versions \
             WHERE schema_id = $1 AND ($2 OR NOT deleted) ORDER BY subject, version",
        )
        .bind(id)
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Deletes a subject: soft (its versions are hidden, numbers kept) or, after a soft delete,
    /// permanent (versions and the subject's own compatibility level removed). Returns the
    /// versions deleted.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let mut tx = self.pool.begin().await?;
        lock_subject(&mut tx, subject, false).await?;
        let rows: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM schema_registry_subject_versions \
             WHERE subject = $1 ORDER BY version",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let live: Vec<i32> = rows.iter().filter(|(_, d)| !d).map(|(v, _)| *v).collect();
        let deleted = if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            // Versions go with the subject row (ON DELETE CASCADE).
            sqlx::query("DELETE FROM schema_registry_subjects WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM schema_registry_config WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            rows.into_iter().map(|(v, _)| v).collect()
        } else {
            if live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
            }
            sqlx::query(
                "UPDATE schema_registry_subject_versions SET deleted = TRUE \
                 WHERE subject = $1 AND NOT deleted",
            )
            .bind(subject)
            .execute(&mut *tx)
            .await?;
            live
        };
        tx.commit().await?;
        tracing::info!(subject, permanent, versions = ?deleted, "subject deleted");
        Ok(deleted)
    }

    /// Deletes one version: soft, or permanent after a soft delete. Returns its number.
    pub async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<i32, RegistryError> {
        let mut tx = self.pool.begin().await?;
        lock_subject(&mut tx, subject, false).await?;
        let rows: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM schema_registry_subject_versions \
             WHERE subject = $1 ORDER BY version DESC",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() || (!permanent && rows.iter().all(|(_, d)| *d)) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let found = match selector {
            // Soft deletes take the newest live version, permanent ones the newest of all.
            VersionSelector::Latest => rows.iter().find(|(_, d)| permanent || !d),
            VersionSelector::Number(n) => rows.iter().find(|(v, _)| *v == n),
        };
        let Some(&(version, deleted)) = found else {
            return Err(RegistryError::VersionNotFound {
                subject: subject.to_owned(),
                version: selector.to_string(),
            });
        };
        let statement = match (permanent, deleted) {
            (false, true) => {
                return Err(RegistryError::VersionSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            (true, false) => {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            (false, false) => {
                "UPDATE schema_registry_subject_versions SET deleted = TRUE \
                 WHERE subject = $1 AND version = $2"
            }
            (true, true) => {
                "DELETE FROM schema_registry_subject_versions WHERE subject = $1 AND version = $2"
            }
        };
        sqlx::query(statement)
            .bind(subject)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(subject, version, permanent, "schema version deleted");
        Ok(version)
    }

    /// Checks `schema` against `subject` without registering it.
    ///
    /// `target` is `None` for "all versions the level covers" (an empty or unknown subject is
    /// then compatible), `Latest` for the latest version (transitive levels: all versions), or a
    /// version number for just that version. Returns the failure messages, empty if compatible.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &ParsedSchema,
        target: Option<VersionSelector>,
    ) -> Result<Vec<String>, RegistryError> {
        // Resolve the target first so an unknown subject or version is an error, as in Confluent.
        let only_version = match target {
            None => None,
            Some(selector) => {
                let found = self.version(subject, selector, false).await?;
                match selector {
                    VersionSelector::Number(_) => Some(found.version),
                    VersionSelector::Latest => None,
                }
            }
        };
        let mut conn = self.pool.acquire().await?;
        let level = effective_level(&mut conn, subject).await?;
        check_against_live(&mut conn, subject, schema, level, only_version).await
    }

    /// The global compatibility level (the default, BACKWARD, unless set).
    pub async fn global_level(&self) -> Result<CompatibilityLevel, RegistryError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT compatibility FROM schema_registry_config WHERE subject IS NULL",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(CompatibilityLevel::DEFAULT), |(level,)| {
            parse_level(&level)
        })
    }

    /// Sets the global compatibility level.
    pub async fn set_global_level(&self, level: CompatibilityLevel) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO schema_registry_config (subject, compatibility) VALUES (NULL, $1) \
             ON CONFLICT ((subject IS NULL)) WHERE subject IS NULL \
             DO UPDATE SET compatibility = EXCLUDED.compatibility, updated_at = now()",
        )
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        tracing::info!(level = %level, "global compatibility level set");
        Ok(())
    }

    /// Resets the global level to the default; returns the level that was in force.
    pub async fn reset_global_level(&self) -> Result<CompatibilityLevel, RegistryError> {
        let row: Option<(String,)> = sqlx::query_as(
            "DELETE FROM schema_registry_config WHERE subject IS NULL RETURNING compatibility",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(CompatibilityLevel::DEFAULT), |(level,)| {
            parse_level(&level)
        })
    }

    /// The subject's own compatibility level, if it has one.
    pub async fn subject_level(
        &self,
        subject: &str,
    ) -> Result<Option<CompatibilityLevel>, RegistryError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT compatibility FROM schema_registry_config WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(level,)| parse_level(&level)).transpose()
    }

    /// Sets the subject's own compatibility level (the subject need not have versions yet).
    pub async fn set_subject_level(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO schema_registry_config (subject, compatibility) VALUES ($1, $2) \
             ON CONFLICT (subject) \
             DO UPDATE SET compatibility = EXCLUDED.compatibility, updated_at = now()",
        )
        .bind(subject)
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        tracing::info!(subject, level = %level, "subject compatibility level set");
        Ok(())
    }

    /// Removes the subject's own level (it falls back to the global one); returns the removed
    /// level, or `None` if it had none.
    pub async fn delete_subject_level(
        &self,
        subject: &str,
    ) -> Result<Option<CompatibilityLevel>, RegistryError> {
        let row: Option<(String,)> = sqlx::query_as(
            "DELETE FROM schema_registry_config WHERE subject = $1 RETURNING compatibility",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(level,)| parse_level(&level)).transpose()
    }

    /// The level that applies to `subject`: its own, else the global one, else the default.
    pub async fn effective_level(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, RegistryError> {
        effective_level(&mut *self.pool.acquire().await?, subject).await
    }

    async fn subject_exists(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<bool, RegistryError> {
        let (exists,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM schema_registry_subject_versions \
             WHERE subject = $1 AND ($2 OR NOT deleted))",
        )
        .bind(subject)
        .bind(include_deleted)
        .fetch_one(&self.pool)
        .await?;
        Ok(exists)
    }
}

fn subject_version(subject: &str, (version, id, schema, deleted): VersionRow) -> SubjectVersion {
    SubjectVersion {
        subject: subject.to_owned(),
        version,
        id,
        schema,
        deleted,
    }
}

fn parse_level(stored: &str) -> Result<CompatibilityLevel, RegistryError> {
    stored.parse().map_err(|_| {
        RegistryError::Corrupt(format!(
            "unknown compatibility level '{stored}' in schema_registry_config"
        ))
    })
}

/// Takes the subject's writer lock for the rest of the transaction. With `create`, a subject
/// row is made if missing (an upsert both creates and locks, race-free); without, a missing
/// subject is [`RegistryError::SubjectNotFound`].
async fn lock_subject(
    conn: &mut PgConnection,
    subject: &str,
    create: bool,
) -> Result<(), RegistryError> {
    if create {
        sqlx::query(
            "INSERT INTO schema_registry_subjects (subject) VALUES ($1) \
             ON CONFLICT (subject) DO UPDATE SET subject = EXCLUDED.subject",
        )
        .bind(subject)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT subject FROM schema_registry_subjects WHERE subject = $1 FOR UPDATE",
    )
    .bind(subject)
    .fetch_optional(conn)
    .await?;
    row.map(|_| ())
        .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))
}

async fn live_version_of(
    conn: &mut PgConnection,
    subject: &str,
    schema: &ParsedSchema,
) -> Result<Option<Registration>, RegistryError> {
    let row: Option<(i32, i32)> = sqlx::query_as(
        "SELECT v.schema_id, v.version FROM schema_registry_subject_versions v \
         JOIN schema_registry_schemas s ON s.id = v.schema_id \
         WHERE v.subject = $1 AND NOT v.deleted AND s.fingerprint = $2",
    )
    .bind(subject)
    .bind(&schema.fingerprint()[..])
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id, version)| Registration {
        id,
        version,
        created: false,
    }))
}

async fn effective_level(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<CompatibilityLevel, RegistryError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT compatibility FROM schema_registry_config \
         WHERE subject = $1 OR subject IS NULL ORDER BY subject IS NULL LIMIT 1",
    )
    .bind(subject)
    .fetch_optional(conn)
    .await?;
    row.map_or(Ok(CompatibilityLevel::DEFAULT), |(level,)| {
        parse_level(&level)
    })
}

/// Loads the live versions the check needs (only `only_version`, if given) and runs it.
async fn check_against_live(
    conn: &mut PgConnection,
    subject: &str,
    schema: &ParsedSchema,
    level: CompatibilityLevel,
    only_version: Option<i32>,
) -> Result<Vec<String>, RegistryError> {
    if level == CompatibilityLevel::None {
        return Ok(Vec::new());
    }
    let limit: i64 = if level.is_transitive() || only_version.is_some() {
        i64::MAX
    } else {
        1
    };
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT v.version, s.schema_text FROM schema_registry_subject_versions v \
         JOIN schema_registry_schemas s ON s.id = v.schema_id \
         WHERE v.subject = $1 AND NOT v.deleted AND ($2::integer IS NULL OR v.version = $2) \
         ORDER BY v.version DESC LIMIT $3",
    )
    .bind(subject)
    .bind(only_version)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let parsed = rows
        .into_iter()
        .map(|(version, text)| {
            apache_avro::Schema::parse_str(&text)
                .map(|s| (version, s))
                .map_err(|e| {
                    RegistryError::Corrupt(format!(
                        "stored schema of {subject} version {version} does not parse: {e}"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let previous: Vec<PreviousVersion<'_>> = parsed
        .iter()
        .map(|(version, schema)| PreviousVersion {
            version: *version,
            schema,
        })
        .collect();
    Ok(compatibility::check(level, schema.schema(), &previous))
}

/// The id of `schema`, inserting it if no subject has registered it yet.
async fn schema_id_for(
    conn: &mut PgConnection,
    schema: &ParsedSchema,
) -> Result<i32, RegistryError> {
    let fingerprint = &schema.fingerprint()[..];
    let select = "SELECT id FROM schema_registry_schemas WHERE fingerprint = $1";
    if let Some((id,)) = sqlx::query_as(select)
        .bind(fingerprint)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    // A concurrent registration of the same schema makes this insert wait for it; if it
    // committed, the insert does nothing and the next statement (a fresh snapshot under READ
    // COMMITTED) sees its row.
    let inserted: Option<(i32,)> = sqlx::query_as(
        "INSERT INTO schema_registry_schemas \
             (fingerprint, canonical, parsing_canonical_form, schema_text) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
    )
    .bind(fingerprint)
    .bind(schema.canonical())
    .bind(schema.parsing_canonical_form())
    .bind(schema.text())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id,)) = inserted {
        return Ok(id);
    }
    let (id,): (i32,) = sqlx::query_as(select)
        .bind(fingerprint)
        .fetch_one(&mut *conn)
        .await?;
    Ok(id)
}
